"""A fake of `magicid.engine.MagicID` with the same interface, for fast UI tests (no models, no torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from types import SimpleNamespace

import numpy as np
from PIL import Image, ImageStat

from magicid.errors import NoFaceError


@dataclass
class FakeIdentity:
    name: str
    embedding: np.ndarray
    clip_images: list
    thumbnail: Image.Image
    warnings: list[str] = field(default_factory=list)


class FakeEngine:
    """Encodes any non-blank photo; generates flat images in the identities' mean colours; reports given statuses."""

    is_miniature = True

    def __init__(self, statuses: list[str] | None = None, failing: list[int] | None = None):
        self.statuses = statuses  # FaceMatch status per identity; default all "ok"
        self.failing = failing  # identities `fix_faces` restores; default those whose status is not "ok"
        self.calls: list[tuple] = []

    def banner(self) -> str:
        return "**Profile: fake** — a test engine; outputs are flat colours."

    def encode_identity(self, photos: list, name: str = "") -> FakeIdentity:
        self.calls.append(("encode_identity", len(photos), name))
        for photo in photos:
            if max(ImageStat.Stat(photo.convert("L")).stddev) < 1.0:
                raise NoFaceError(f"No face found in {photo.info.get('source', 'the photo')}: upload a photo where the face is visible")
        mean = np.mean([np.asarray(photo.resize((8, 8)), dtype=np.float32).mean(axis=(0, 1)) for photo in photos], axis=0)
        warnings = ["2 faces found in group.jpg; using the largest"] if len(photos) > 2 else []
        return FakeIdentity(name, mean / np.linalg.norm(mean), [], photos[0].resize((64, 64)), warnings)

    def generate(self, config, identities, layout=None, progress=None):
        self.calls.append(("generate", config, len(identities), layout))
        for step in range(1, config.steps + 1):
            if progress is not None:
                progress(step, config.steps)
        color = tuple(int(v * 255) for v in identities[0].embedding[:3])
        images = [Image.new("RGB", (config.width, config.height), color) for _ in range(config.num_images)]
        debug = [(layout.render_skeleton(), "skeleton")] if layout is not None else []
        report = self._report(len(identities))
        return SimpleNamespace(images=images, debug_images=debug, report=report, messages=[], parameters=asdict(config))

    def fix_faces(self, image, identities, layout, config=None, progress=None, only=None):
        """Darkens the image once per failing identity (a visible change) and records the call."""
        self.calls.append(("fix_faces", image, len(identities), layout, config, only))
        failing = [index for index in self._failing(len(identities)) if only is None or index in only]
        if not failing:
            return SimpleNamespace(image=image, faces=[], debug_images=[], messages=["the image is unchanged"],
                                   analysis=image)  # fmt: skip
        fixed = Image.eval(image.convert("RGB"), lambda value: value // 2)
        faces = [SimpleNamespace(reference=index) for index in failing]
        return SimpleNamespace(image=fixed, faces=faces, debug_images=[(fixed, "after")], messages=["faces fixed"],
                               analysis=fixed)  # fmt: skip

    def same_person_threshold(self) -> float:
        return 0.5

    def check_identities(self, image, identities, layout):
        self.calls.append(("check_identities", len(identities)))
        return self._report(len(identities), fixed=True)

    def _failing(self, count: int) -> list[int]:
        if self.failing is not None:
            return self.failing
        return [index for index, status in enumerate(self.statuses or ["ok"] * count) if status != "ok"]

    def _report(self, count: int, fixed: bool = False) -> list:
        statuses = ["ok"] * count if fixed or not self.statuses else self.statuses
        return [
            SimpleNamespace(identity=index, similarity=0.9 if fixed else 0.7, iou=0.8, face_box=None, status=status)
            for index, status in enumerate(statuses)
        ]

    def restore(self, image, references, config, progress=None, assignment=None):
        self.calls.append(("restore", len(references), config, assignment))
        restored = Image.eval(image, lambda value: 255 - value)
        return SimpleNamespace(image=restored, faces=[], debug_images=[(image, "before"), (restored, "after")], messages=["1 face restored"])
