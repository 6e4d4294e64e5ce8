"""The layout editor's picture: skeletons with each face region outlined and labelled with its identity."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont


IDENTITY_COLORS = ((255, 99, 71), (65, 160, 255), (80, 200, 120), (255, 200, 40), (200, 110, 255), (255, 140, 200))
JOINT_NAMES = (
    "nose", "neck", "right shoulder", "right elbow", "right wrist", "left shoulder", "left elbow", "left wrist",
    "right hip", "right knee", "right ankle", "left hip", "left knee", "left ankle", "right eye", "left eye",
    "right ear", "left ear",
)  # fmt: skip
UNASSIGNED_COLOR = (160, 160, 160)


def identity_color(identity: int | None) -> tuple[int, int, int]:
    return UNASSIGNED_COLOR if identity is None else IDENTITY_COLORS[identity % len(IDENTITY_COLORS)]


def draw_canvas(layout, names: list[str] | None = None, selected: tuple[int, int | None] | None = None) -> Image.Image:
    """The layout's skeleton image with each person's face region outlined and labelled with its identity.

    `selected` = (person, joint or None) is highlighted: a ring around the joint, or a box around the person.
    """
    canvas = layout.render_condition().convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = _font(max(12, canvas.width // 40))
    for index, (person, box) in enumerate(zip(layout.people, layout.face_boxes())):
        if box is None:  # a person with neither head nor neck joints has no face region to outline
            continue
        color = identity_color(person.identity)
        draw.rectangle([float(v) for v in box], outline=color, width=3)
        draw.text((float(box[0]) + 3, float(box[1]) - font.size - 4), person_label(index, person.identity, names), fill=color, font=font)
    if selected is not None:
        _draw_selection(draw, layout, *selected)
    return canvas


def _draw_selection(draw: ImageDraw.ImageDraw, layout, person: int, joint: int | None) -> None:
    if person >= len(layout.people):
        return
    keypoints = layout.people[person].keypoints
    if joint is not None:
        x, y = _pixels(layout, keypoints[joint : joint + 1])[0]
        radius = max(8, layout.width // 48)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=(255, 255, 255), width=3)
        return
    points = _pixels(layout, keypoints[keypoints[:, 2] > 0])
    if len(points):
        x0, y0 = points.min(axis=0) - 10
        x1, y1 = points.max(axis=0) + 10
        draw.rectangle([x0, y0, x1, y1], outline=(255, 255, 255), width=2)


def person_label(index: int, identity: int | None, names: list[str] | None = None) -> str:
    """The name of the person figure `index` shows (`Person i` when unnamed), or `figure k (nobody)`: labels
    follow the person cards, so removing a figure renames nobody."""
    if identity is None:
        return f"figure {index + 1} (nobody)"
    return names[identity] if names and identity < len(names) and names[identity] else f"Person {identity + 1}"


def _pixels(layout, keypoints: np.ndarray) -> np.ndarray:
    return np.asarray(keypoints, dtype=np.float64)[:, :2] * np.array([layout.width, layout.height])


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()
