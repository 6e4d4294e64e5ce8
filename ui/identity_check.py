"""The identity check drawn on the picture: a labelled box per person (name, likeness, verdict), and which
faces a one-click fix can re-denoise. Plain values only; `ui/generate_tab.py` shows them."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from magicid.errors import LayoutError


VERDICTS = {
    "missing": "not found in their place",
    "misplaced": "found outside their place",
    "duplicate": "shown twice",
}
COLORS = {"ok": "#2e9d4f", "failing": "#d43c3c"}


@dataclass(frozen=True)
class FaceCheck:
    """How one person came out in one picture."""

    identity: int
    name: str
    similarity: float
    status: str  # the identity check's: "ok" | "missing" | "misplaced" | "duplicate"
    threshold: float  # likeness above which the face counts as this person
    box: tuple[int, int, int, int] | None  # the face found, else the person's place in the layout

    @property
    def failing(self) -> bool:
        return self.status != "ok" or self.similarity < self.threshold

    @property
    def label(self) -> str:
        if self.status in VERDICTS:
            return f"✗ {self.name}: {VERDICTS[self.status]}"
        verdict = "✓" if self.similarity >= self.threshold else "✗"
        relation = "≥" if self.similarity >= self.threshold else "<"
        return f"{verdict} {self.name}: likeness {self.similarity:.2f} {relation} {self.threshold:.2f}"


@dataclass
class ImageCheck:
    """One picture's identity check."""

    image: Image.Image
    faces: list[FaceCheck]

    @property
    def failing(self) -> list[FaceCheck]:
        return [face for face in self.faces if face.failing]

    def annotated(self) -> tuple[Image.Image, list[tuple[tuple[int, int, int, int], str]]]:
        """The value of a `gr.AnnotatedImage`: the picture and a labelled box per person."""
        return self.image, [(face.box, face.label) for face in self.faces if face.box is not None]

    def color_map(self) -> dict[str, str]:
        return {face.label: COLORS["failing" if face.failing else "ok"] for face in self.faces}


def image_checks(images: list, report: list, layout, names: list[str], threshold: float) -> list[ImageCheck]:
    """Per image, its `FaceCheck`s from the engine's flat report (one `FaceMatch` per identity, image after image)."""
    per_image = max(len(names), 1)
    checks = []
    for index, image in enumerate(images):
        matches = report[index * per_image : (index + 1) * per_image]
        regions = _regions(layout, image.size, len(names))
        checks.append(ImageCheck(image, [_face_check(match, names, threshold, regions) for match in matches]))
    return checks


def _face_check(match, names: list[str], threshold: float, regions: list) -> FaceCheck:
    identity = int(match.identity)
    name = names[identity] if identity < len(names) else f"Person {identity + 1}"
    box = match.face_box if match.face_box is not None else (regions[identity] if identity < len(regions) else None)
    pixels = None if box is None else tuple(int(round(float(value))) for value in box)
    return FaceCheck(identity, name, float(match.similarity or 0.0), str(match.status), float(threshold), pixels)


def _regions(layout, size: tuple[int, int], count: int) -> list:
    """Each person's face region in the layout, at the picture's size (where to draw a face that is missing)."""
    if layout is None or not count:
        return []
    fitted = layout if (layout.width, layout.height) == tuple(size) else layout.fit_to(*size)
    try:
        return fitted.identity_boxes(count)
    except LayoutError:  # a layout that cannot place everyone still has a check to show
        return []
