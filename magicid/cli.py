"""`python -m magicid <command>`: each command lives in `magicid/commands/<command>.py`.

A command module exposes `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`. Errors the user
caused (`MagicIDError`) are printed as one line and exit with status 2; nothing prints a traceback for them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from magicid.errors import MagicIDError


COMMANDS = ("generate", "layout", "restore", "analyze", "similarity", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m magicid", description="MagicID: photos of specified people.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and model loading")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"magicid.commands.{name}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.run(args)
    except MagicIDError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # an output path that cannot be written: a folder, /proc, a full disk, ...
        where = f" {error.filename}" if error.filename else ""
        print(f"error: cannot write or read{where}: {error.strerror or error}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: not enough memory for this request: use a smaller size, fewer steps or fewer images", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
