"""`python -m magicid evaluate`: the paper's tables for a profile, on a folder of identities."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from magicid.commands.shared import add_profile_arguments, engine_from_args
from magicid.config import GenerationConfig


@dataclass(frozen=True)
class Sweep:
    """A generation setting that `evaluate` can add rows for, one row per value."""

    flag: str
    setting: str  # the GenerationConfig field
    label: str  # the row's name is the label and the value
    what: str
    example: float
    limit: str  # the Limits field that bounds it

    @property
    def default(self) -> float:
        return getattr(GenerationConfig(), self.setting)


SWEEPS = (
    Sweep("cfg-row", "guidance_scale", "CFG", "classifier-free guidance scale", 2.5, "max_guidance"),
    Sweep("id-row", "id_scale", "ID", "ID strength (the scale of the F_id attention)", 0.5, "max_strength"),
    Sweep("control-row", "controlnet_scale", "ControlNet", "ControlNet strength (pose and landmarks)", 1.5, "max_strength"),
)

HELP = "Run an evaluation suite (single, group, fullbody, restore) and write results.json and table.md."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from magicid.evaluation.suites import KINDS, RESTORE_FACE_PX

    parser.add_argument("--suite", required=True, choices=KINDS,
                        help="which table; restore: real photos shrunk to 64 px faces, as they are and restored by DIIR")  # fmt: skip
    parser.add_argument("--identities", required=True, type=Path,
                        help="folder with one sub-folder of photos per person (e.g. data/mini/crops/held_out)")  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="output folder (resumable)")
    parser.add_argument("--judge", default="auto", choices=("auto", "arcface", "fr_feature", "dlib"),
                        help="identity judge; auto: ArcFace if present, else fr_feature (never the conditioning embedder)")  # fmt: skip
    parser.add_argument("--allow-conditioning-judge", action="store_true",
                        help="let the embedder that conditions the model judge it too (biased; for comparison only)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, help="only the first N cases")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the paper's 30)")
    parser.add_argument("--template", default=None, help="layout template (default: portrait; full-body for fullbody)")
    parser.add_argument("--prompt", default="a photo of a person")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ablation", action="append", default=[], metavar="NAME=FOLDER",
                        help="an extra row generated with other trained weights of the profile, e.g. "
                             "'L_cfa off=runs/mmf-no-cfa/final' (repeatable)")  # fmt: skip
    for sweep in SWEEPS:
        parser.add_argument(f"--{sweep.flag}", action="append", type=float, default=[], metavar="SCALE",
                            help=f"an extra row generated at this {sweep.what} instead of {sweep.default:g}, "
                                 f"e.g. {sweep.example:g} (repeatable; not for the restore suite)")  # fmt: skip
    parser.add_argument("--face-px", type=int, default=RESTORE_FACE_PX,
                        help="restore suite: the width each photo's face is shrunk to (DIIR restores faces under 100 px)")  # fmt: skip
    add_profile_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from magicid.errors import InvalidSettingError
    from magicid.evaluation.judges import pick_judge
    from magicid.evaluation.runner import evaluate
    from magicid.evaluation.suites import build_suite

    suite = build_suite(args.suite, args.identities, args.limit, args.template, args.prompt, args.seed, args.face_px)
    from magicid.config import default_profile_name

    suite.rows += ablation_rows(args.ablation, args.profile or default_profile_name())
    for sweep in SWEEPS:
        suite.rows += setting_rows(sweep, getattr(args, sweep.flag.replace("-", "_")), args.suite)
    names = [row.name for row in suite.rows]
    if len(set(names)) < len(names):
        raise InvalidSettingError(f"--ablation: every row needs its own name (the suite's rows are {', '.join(names)})")
    engine = engine_from_args(args)
    conditioning = engine.identity_encoder.embedder.name
    judge = pick_judge(args.judge, conditioning, args.allow_conditioning_judge)
    results = evaluate(engine, suite, judge, args.out, args.steps)
    print((args.out / "table.md").read_text())
    print(json.dumps({"results": str(args.out / "results.json"), "rows": len(results["rows"])}))
    return 0


def ablation_rows(specs: list[str], profile: str) -> list:
    """`NAME=FOLDER` -> a table row generated with the weights in FOLDER (trained models only)."""
    from magicid.errors import InvalidSettingError
    from magicid.evaluation.suites import Row

    rows = []
    for spec in specs:
        name, _, folder = spec.partition("=")
        if not name.strip() or not folder.strip():
            raise InvalidSettingError(f"--ablation {spec[:60]!r}: write NAME=FOLDER, e.g. 'L_cfa off=runs/no-cfa/final'")
        if profile not in ("magicid", "mini"):
            raise InvalidSettingError(f"--ablation compares trained weights: use it with --profile magicid or mini, not {profile}")
        if not (Path(folder.strip()) / "magicid.json").is_file():
            raise InvalidSettingError(f"--ablation {name.strip()}: {Path(folder).name} is not a folder written by train/ (no magicid.json)")
        rows.append(Row(name.strip(), weights=str(Path(folder.strip()).resolve())))
    return rows


def setting_rows(sweep: Sweep, scales: list[float], suite: str) -> list:
    """`--cfg-row 2.5` (or `--id-row`, `--control-row`) -> a table row generated with that one setting changed."""
    from magicid.config import Limits
    from magicid.errors import InvalidSettingError
    from magicid.evaluation.suites import Row

    if scales and suite == "restore":
        raise InvalidSettingError(f"--{sweep.flag}: the restore suite runs DIIR with its own settings; "
                                  "use it with single, group or fullbody")  # fmt: skip
    limit = getattr(Limits(), sweep.limit)
    for scale in scales:
        if not 0 <= scale <= limit:  # also refuses nan
            raise InvalidSettingError(f"--{sweep.flag} {scale}: use a {sweep.what} from 0 to {limit:g}")
    return [Row(f"{sweep.label} {scale:g}", {sweep.setting: scale}) for scale in dict.fromkeys(scales)]
