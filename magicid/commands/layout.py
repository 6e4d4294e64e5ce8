"""`python -m magicid layout`: write a layout JSON from a template or from the poses in a photo."""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from magicid.errors import LayoutError
from magicid.layout import MAX_TEMPLATE_PEOPLE, TEMPLATES, Layout, people_count


HELP = "make a layout of people (JSON) from a template or a photo, for `generate --skeleton`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--template", choices=TEMPLATES, help="built-in arrangement")
    source.add_argument("--from-photo", metavar="PHOTO", help="copy the poses (and face boxes) of the people in PHOTO")
    parser.add_argument("--people", type=int, default=None, help=f"people in the template (1..{MAX_TEMPLATE_PEOPLE})")
    parser.add_argument("--out", required=True, metavar="LAYOUT.json", help="where to write the layout")
    parser.add_argument("--width", type=int, default=None, help="canvas width (template default 512)")
    parser.add_argument("--height", type=int, default=None, help="canvas height (template default 512)")
    parser.add_argument("--preview", metavar="PNG", help="also save the skeleton with the face regions drawn on it")


def run(args: argparse.Namespace) -> int:
    layout = build_layout(args)
    layout.to_json(args.out)
    faces = sum(1 for box in layout.face_boxes() if box is not None)
    print(f"wrote {args.out}: {layout.width}x{layout.height}, {people_count(len(layout.people))}, {faces} faces")
    for warning in layout.validate(faces):
        print(f"warning: {warning}")
    if args.preview:
        preview_image(layout).save(args.preview)
        print(f"wrote {args.preview}")
    return 0


def build_layout(args: argparse.Namespace) -> Layout:
    if args.template:
        if args.people is None:
            raise LayoutError("--template needs --people N (how many people, 1 to 6)")
        width, height = (512 if side is None else side for side in (args.width, args.height))
        return Layout.from_template(args.template, args.people, width, height)
    if args.people is not None:
        raise LayoutError("--people is for --template; --from-photo takes everyone it finds in the photo")
    if (args.width is None) != (args.height is None):
        raise LayoutError("give both --width and --height, or neither (then the photo's aspect ratio picks them)")
    return Layout.from_photo(args.from_photo, args.width, args.height)


def preview_image(layout: Layout) -> Image.Image:
    """The skeleton with every face region tinted (white), for checking a layout by eye."""
    skeleton = np.asarray(layout.render_skeleton(), dtype=np.float32)
    faces = sum(1 for box in layout.face_boxes() if box is not None)
    regions = layout.identity_masks(faces).max(axis=0, initial=0.0)[..., None] if faces else 0.0
    return Image.fromarray(np.clip(skeleton + 110 * regions, 0, 255).astype(np.uint8))
