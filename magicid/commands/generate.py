"""`python -m magicid generate --prompt TEXT --id PHOTO [--id PHOTO ...] --out OUT.png`: portraits and group photos."""

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
from magicid.config import PAPER_GUIDANCE, PAPER_STEPS, GenerationConfig


HELP = "Generate a portrait or group photo of the people in the --id photos, posed by a layout or a pose photo."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help="what the picture shows, e.g. 'two friends in a park'")
    parser.add_argument("--negative-prompt", default=GenerationConfig.negative_prompt, help="what to avoid")
    add_identity_arguments(parser, "a face photo, or several of the same person joined by commas")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--pose", metavar="PHOTO", help="take the people's poses from this photo")
    where.add_argument("--skeleton", metavar="LAYOUT.json", help="a layout saved by `magicid layout` or the app")
    where.add_argument("--template", default="half-body", help="built-in layout when neither --pose nor --skeleton")
    parser.add_argument("--out", required=True, help="output PNG (several images: OUT-1.png, OUT-2.png, ...)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=PAPER_STEPS, help=f"DDIM steps (paper: {PAPER_STEPS})")
    parser.add_argument("--guidance", type=float, default=PAPER_GUIDANCE, help=f"CFG scale (paper: {PAPER_GUIDANCE})")
    parser.add_argument("--id-scale", type=float, default=1.0, help="ID strength s of Eq. 1")
    parser.add_argument("--controlnet-scale", type=float, default=1.0, help="pose condition strength")
    parser.add_argument("--width", type=int, default=None, help="multiple of 8, 512..1024 (default: the layout's, or 512)")
    parser.add_argument("--height", type=int, default=None, help="multiple of 8, 512..1024 (default: the layout's, or 512)")
    parser.add_argument("--num-images", type=int, default=1)
    restore = parser.add_mutually_exclusive_group()
    restore.add_argument("--restore", dest="restore", action="store_true", default=None, help="always run DIIR")
    restore.add_argument("--no-restore", dest="restore", action="store_false", help="never run DIIR")
    parser.add_argument("--debug-dir", help="also save the skeleton, face-region masks and restoration views here")
    add_profile_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from magicid.pngmeta import save_png

    engine = engine_from_args(args)
    layout = _layout(args, len(args.ids))
    config = GenerationConfig(
        prompt=args.prompt, negative_prompt=args.negative_prompt, steps=args.steps, guidance_scale=args.guidance,
        id_scale=args.id_scale, controlnet_scale=args.controlnet_scale,
        width=layout.width if args.width is None else args.width,
        height=layout.height if args.height is None else args.height,
        seed=args.seed, num_images=args.num_images, restore_small_faces=args.restore,
    )  # fmt: skip
    from magicid.engine import validate_generation

    validate_generation(config, len(args.ids), engine.limits)  # fail fast, before any model loads
    identities = encode_identities(engine, args)
    result = engine.generate(config, identities, layout)
    for message in [*result.messages, *result.report_lines]:
        print(f"note: {message}", file=sys.stderr)
    for path, image in zip(_output_paths(Path(args.out), len(result.images)), result.images):
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(image, path, result.parameters)
        print(path)
    if args.debug_dir:
        save_debug_images(Path(args.debug_dir), result.debug_images)
    return 0


def _layout(args: argparse.Namespace, num_identities: int):
    from magicid.imageio import load_image
    from magicid.layout import Layout

    if args.skeleton:
        return Layout.read(args.skeleton)
    if args.pose:
        return Layout.from_photo(load_image(args.pose), args.width, args.height)
    return Layout.from_template(args.template, num_identities, args.width or 512, args.height or 512)


def _output_paths(out: Path, count: int) -> list[Path]:
    if out.suffix.lower() != ".png":
        out = out.with_suffix(".png")
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{index + 1}{out.suffix}") for index in range(count)]
