"""`python -m magicid restore --image IN --id REF [--id REF ...] --out OUT`: DIIR on any picture's small faces."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from magicid.commands.shared import (
    add_identity_arguments,
    add_profile_arguments,
    encode_identities,
    engine_from_args,
    save_debug_images,
)
from magicid.config import PAPER_SMALL_FACE_PX, PAPER_STEPS, DIIRConfig


HELP = "Restore the small faces of any picture with the identities of the --id photos (DIIR), background untouched."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="the picture whose small faces to restore")
    add_identity_arguments(parser, "a face photo, or several of one person joined by commas")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument(
        "--threshold", type=int, default=PAPER_SMALL_FACE_PX, help="restore faces smaller than this (px)"
    )
    parser.add_argument(
        "--assign", metavar="N|off,...",
        help="per small face (largest first): the --id number (1-based) to restore it as, or 'off' "
        "(default: matched by face similarity, see --min-similarity)",
    )  # fmt: skip
    parser.add_argument(
        "--min-similarity", type=float, default=None,
        help="without --assign, restore a face only as a reference at least this similar (default: the face "
        "embedder's same-person threshold); other faces are left as they are",
    )  # fmt: skip
    parser.add_argument(
        "--reuse-references", action="store_true", help="without --assign, let one reference restore several faces"
    )
    parser.add_argument(
        "--steps", type=int, default=PAPER_STEPS, help=f"DDIM inversion and denoising steps (paper: {PAPER_STEPS})"
    )
    parser.add_argument("--id-scale", type=float, default=1.0, help="ID strength")
    parser.add_argument("--landmark-scale", type=float, default=1.0, help="landmark condition strength")
    parser.add_argument(
        "--resolution", type=int, default=None, help="face crop side fed to the model (default: the model's)"
    )
    parser.add_argument("--debug-dir", help="also save each face's crop, landmarks, mask and before/after here")
    add_profile_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from magicid.diir import parse_assignment
    from magicid.imageio import load_image
    from magicid.pngmeta import save_png

    config = _config(args)
    assignment = parse_assignment(args.assign, len(args.ids))
    image = load_image(args.image)  # fail fast on a bad picture, before any model loads
    engine = engine_from_args(args)
    references = encode_identities(engine, args, default_name=lambda index: f"#{index + 1}")
    result = engine.restore(image, references, config, assignment=assignment)
    for message in result.messages:
        print(f"note: {message}", file=sys.stderr)
    out = Path(args.out).with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_png(result.image, out, {"command": "restore", "profile": engine.profile.name, **_parameters(config, references)})
    print(out)
    if args.debug_dir:
        save_debug_images(Path(args.debug_dir), result.debug_images)
    return 0


def _config(args: argparse.Namespace) -> DIIRConfig:
    from magicid.config import Limits, validate_diir_config

    config = DIIRConfig(
        threshold_px=args.threshold, steps=args.steps, id_scale=args.id_scale, controlnet_scale=args.landmark_scale,
        resolution=args.resolution, min_similarity=args.min_similarity, reuse_references=args.reuse_references,
    )  # fmt: skip
    validate_diir_config(config, Limits())
    return config


def _parameters(config: DIIRConfig, references) -> dict:
    from dataclasses import asdict

    return {"diir": asdict(config), "identities": [reference.name for reference in references]}
