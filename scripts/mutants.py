"""Mutation testing: break one mechanism of the paper at a time and check that the tests notice.

    .venv/bin/python scripts/mutants.py                  # every mutant, prints a table and the score
    .venv/bin/python scripts/mutants.py --list           # the catalogue
    .venv/bin/python scripts/mutants.py cfa_weight_zero diir_no_latent_fusion     # some of them
    .venv/bin/python scripts/mutants.py --json out.json  # also write the results

Each mutant (`scripts/mutant_catalogue.py`) is a named text substitution in one source file plus the test files
that guard that mechanism. The runner copies the tracked files to a scratch folder, applies the mutant there
(the work tree is never touched), runs those tests with `-x`, and calls the mutant *killed* when they fail,
*survived* when they pass, and *stale* when its text is no longer in the file (the catalogue needs updating).
A full run takes about an hour on 2 CPU cores; it is not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from mutant_catalogue import MUTANTS, Mutant  # noqa: E402


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    return [line for line in listed.splitlines() if (REPO / line).is_file()]


def snapshot(files: list[str], destination: Path) -> None:
    """Copy the files as they are now, so edits made while mutants run do not leak into later mutants."""
    for name in files:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)


def apply(mutant: Mutant, root: Path) -> bool:
    """Apply every substitution of `mutant` under `root`; False if one of its texts is not found exactly once."""
    path = root / mutant.path
    text = path.read_text(encoding="utf-8")
    for old, new in mutant.substitutions:
        if text.count(old) != 1:
            return False
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return True


def run_tests(root: Path, tests: tuple[str, ...], timeout_s: int) -> tuple[bool, str]:
    """(passed, last line of pytest's output) of `tests` run inside `root`."""
    env = {**os.environ, "MAGICID_TESTDATA": str(REPO.parent / "shared" / "testdata"), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    try:
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout_s} s"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode == 0, lines[-1] if lines else done.stderr.strip()[-200:]


def run_mutant(mutant: Mutant, base: Path, timeout_s: int) -> dict:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="magicid-mutant-") as scratch:
        root = Path(scratch) / "repo"
        shutil.copytree(base, root)
        if not apply(mutant, root):
            outcome, detail = "stale", "text not found exactly once"
        else:
            passed, detail = run_tests(root, mutant.tests, timeout_s)
            outcome = "survived" if passed else "killed"
    return {"name": mutant.name, "path": mutant.path, "outcome": outcome, "detail": detail,
            "seconds": round(time.perf_counter() - started, 1), "what": mutant.what}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the catalogue and exit")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per mutant's tests")
    args = parser.parse_args()
    if args.list:
        for mutant in MUTANTS:
            print(f"{mutant.name:36s} {mutant.path:28s} {mutant.what}")
        return 0
    unknown = set(args.names) - {mutant.name for mutant in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants: {', '.join(sorted(unknown))} (see --list)")
    chosen = [mutant for mutant in MUTANTS if not args.names or mutant.name in args.names]
    base = Path(tempfile.mkdtemp(prefix="magicid-mutants-base-"))
    snapshot(tracked_files(), base)
    results = []
    for number, mutant in enumerate(chosen, 1):
        result = run_mutant(mutant, base, args.timeout)
        results.append(result)
        print(f"[{number}/{len(chosen)}] {result['outcome']:8s} {mutant.name:36s} {result['seconds']:6.1f}s  "
              f"{result['detail'][:90]}", flush=True)  # fmt: skip
    killed = sum(result["outcome"] == "killed" for result in results)
    scored = sum(result["outcome"] != "stale" for result in results)
    survivors = [result["name"] for result in results if result["outcome"] == "survived"]
    stale = [result["name"] for result in results if result["outcome"] == "stale"]
    print(f"mutation score: {killed}/{scored} killed" + (f"; survived: {', '.join(survivors)}" if survivors else "")
          + (f"; stale: {', '.join(stale)}" if stale else ""))  # fmt: skip
    shutil.rmtree(base, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"killed": killed, "scored": scored, "results": results}, indent=2))
    return 1 if survivors or stale else 0


if __name__ == "__main__":
    sys.exit(main())
