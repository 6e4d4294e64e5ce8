"""IDZoom records and shards: six modalities per photo, stored as WebDataset-style tar shards that stream.

One record = the members `<key>.<field>` of a tar file, consecutive in the archive:

| member | content |
|---|---|
| `<key>.json` | caption, source path, sizes, face box / 5 points (px), OpenPose-18 keypoints (normalised), face landmarks (px), embedder name |
| `<key>.image.jpg` | the photo (downscaled to the build's max side) |
| `<key>.skeleton.png` | rendered OpenPose skeleton, same size as the image |
| `<key>.face.png` | ArcFace-aligned face crop (224 px, the CLIP-vision input) |
| `<key>.landmarks.png` | rendered face landmarks, same size as the image |
| `<key>.mask.png` | soft face-region mask (8-bit), same size as the image |
| `<key>.embedding.npy` | L2-normalised face embedding, so training needs no face model |

A shard is written as `shard-NNNNNN.tar.partial` and renamed to `shard-NNNNNN.tar` when complete, next to an
index `shard-NNNNNN.json` listing its keys and sources: a build that stops resumes from the finished shards.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


SHARD_PATTERN = "shard-{index:06d}"
IMAGE_FIELDS = ("image", "skeleton", "face", "landmarks", "mask")
IMAGE_FORMATS = {"image": ("JPEG", "jpg"), "skeleton": ("PNG", "png"), "face": ("PNG", "png"),
                 "landmarks": ("PNG", "png"), "mask": ("PNG", "png")}  # fmt: skip


@dataclass
class IDZoomRecord:
    """One training sample with the six IDZoom modalities and the face embedding."""

    key: str
    source: str
    caption: str
    image: Image.Image
    skeleton: Image.Image
    keypoints: np.ndarray  # (18, 3) OpenPose-18, normalised (x, y, confidence)
    face: Image.Image  # aligned crop
    landmarks_image: Image.Image
    landmarks: np.ndarray  # (K, 2) px of `image`
    mask: np.ndarray  # (H, W) float32 in [0, 1]
    face_box: np.ndarray  # (4,) px of `image`
    face_kps5: np.ndarray  # (5, 2) px of `image`
    embedding: np.ndarray  # (D,) float32
    embedder: str
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def face_box_norm(self) -> np.ndarray:
        width, height = self.image.size
        return self.face_box / np.array([width, height, width, height], dtype=np.float64)

    def metadata(self) -> dict:
        return {
            "key": self.key,
            "source": self.source,
            "caption": self.caption,
            "width": self.image.width,
            "height": self.image.height,
            "keypoints": np.asarray(self.keypoints, dtype=float).round(5).tolist(),
            "landmarks": np.asarray(self.landmarks, dtype=float).round(2).tolist(),
            "face_box": np.asarray(self.face_box, dtype=float).round(2).tolist(),
            "face_kps5": np.asarray(self.face_kps5, dtype=float).round(2).tolist(),
            "embedder": self.embedder,
            "embedding_dim": int(np.asarray(self.embedding).size),
            **self.extra,
        }

    def to_members(self) -> dict[str, bytes]:
        """The tar members of this record, name suffix -> bytes."""
        members = {"json": json.dumps(self.metadata()).encode()}
        for name in IMAGE_FIELDS:
            image_format, extension = IMAGE_FORMATS[name]
            members[f"{name}.{extension}"] = _encode_image(self._image_field(name), image_format)
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(self.embedding, dtype=np.float32))
        members["embedding.npy"] = buffer.getvalue()
        return members

    @classmethod
    def from_members(cls, members: dict[str, bytes]) -> IDZoomRecord:
        meta = json.loads(members["json"])
        images = {name: _decode_image(members[f"{name}.{IMAGE_FORMATS[name][1]}"]) for name in IMAGE_FIELDS}
        known = {"key", "source", "caption", "width", "height", "keypoints", "landmarks", "face_box",
                 "face_kps5", "embedder", "embedding_dim"}  # fmt: skip
        return cls(
            key=meta["key"],
            source=meta["source"],
            caption=meta["caption"],
            image=images["image"].convert("RGB"),
            skeleton=images["skeleton"].convert("RGB"),
            keypoints=np.asarray(meta["keypoints"], dtype=np.float32).reshape(18, 3),
            face=images["face"].convert("RGB"),
            landmarks_image=images["landmarks"].convert("RGB"),
            landmarks=np.asarray(meta["landmarks"], dtype=np.float32).reshape(-1, 2),
            mask=np.asarray(images["mask"].convert("L"), dtype=np.float32) / 255.0,
            face_box=np.asarray(meta["face_box"], dtype=np.float64),
            face_kps5=np.asarray(meta["face_kps5"], dtype=np.float64).reshape(5, 2),
            embedding=np.load(io.BytesIO(members["embedding.npy"])),
            embedder=meta["embedder"],
            extra={k: v for k, v in meta.items() if k not in known},
        )

    def _image_field(self, name: str) -> Image.Image:
        if name == "mask":
            return Image.fromarray(np.clip(np.rint(self.mask * 255), 0, 255).astype(np.uint8), mode="L")
        if name == "landmarks":
            return self.landmarks_image
        return getattr(self, name)


def _encode_image(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": 95} if image_format == "JPEG" else {}
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _decode_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def split_member_name(name: str) -> tuple[str, str]:
    """`abc.image.jpg` -> (`abc`, `image.jpg`): the key is everything before the first dot of the basename."""
    key, _, suffix = name.partition(".")
    return key, suffix


def shard_paths(directory: str | Path) -> list[Path]:
    """The finished shards of a dataset folder, in order."""
    return sorted(Path(directory).glob("shard-*.tar"))


def finished_sources(directory: str | Path) -> set[str]:
    """Sources already stored in finished shards (what a resumed build skips)."""
    sources: set[str] = set()
    for index_path in sorted(Path(directory).glob("shard-*.json")):
        if index_path.with_suffix(".tar").exists():
            sources.update(entry["source"] for entry in json.loads(index_path.read_text())["records"])
    return sources


class ShardWriter:
    """Writes records into numbered tar shards of `records_per_shard`; only complete shards get their final name.

    Opening a folder that already holds shards continues after the last finished one, and discards any partial
    shard left by an interrupted build (its sources are not in a finished index, so they are rebuilt).
    """

    def __init__(self, directory: str | Path, records_per_shard: int = 1000):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.records_per_shard = records_per_shard
        for partial in self.directory.glob("shard-*.tar.partial"):
            partial.unlink()
        finished = [int(path.name.split("-")[1].split(".")[0]) for path in shard_paths(self.directory)]
        self.next_index = max(finished, default=-1) + 1
        self._tar: tarfile.TarFile | None = None
        self._entries: list[dict] = []

    @property
    def pending(self) -> int:
        """Records written to the current, unfinished shard."""
        return len(self._entries)

    def write(self, record: IDZoomRecord) -> None:
        if self._tar is None:
            self._tar = tarfile.open(self._path(".tar.partial"), "w")
        for suffix, data in record.to_members().items():
            info = tarfile.TarInfo(f"{record.key}.{suffix}")
            info.size = len(data)
            self._tar.addfile(info, io.BytesIO(data))
        self._entries.append({"key": record.key, "source": record.source})
        if len(self._entries) >= self.records_per_shard:
            self.finish_shard()

    def finish_shard(self) -> None:
        """Close the current shard (if any), write its index and give it its final name."""
        if self._tar is None:
            return
        self._tar.close()
        self._path(".json").write_text(json.dumps({"records": self._entries}, indent=1))
        self._path(".tar.partial").rename(self._path(".tar"))
        self._tar, self._entries = None, []
        self.next_index += 1

    def close(self) -> None:
        self.finish_shard()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is None:
            self.close()
        elif self._tar is not None:  # leave the partial shard to be discarded on resume
            self._tar.close()

    def _path(self, suffix: str) -> Path:
        return self.directory / (SHARD_PATTERN.format(index=self.next_index) + suffix)


def iter_shard(path: str | Path, decode: bool = True) -> Iterator[IDZoomRecord]:
    """Records of one shard, streamed (the tar is read front to back, never indexed). `decode=False` yields the raw
    `{suffix: bytes}` members instead (for `IDZoomRecord.from_members` later, e.g. only for records not skipped)."""
    finish = IDZoomRecord.from_members if decode else dict
    with tarfile.open(path, "r|") as archive:
        key, members = None, {}
        for info in archive:
            if not info.isfile():
                continue
            member_key, suffix = split_member_name(Path(info.name).name)
            if key is not None and member_key != key:
                yield finish(members)
                members = {}
            key = member_key
            members[suffix] = archive.extractfile(info).read()
        if members:
            yield finish(members)


def iter_records(
    paths: list[Path],
    consumer: int = 0,
    num_consumers: int = 1,
    shuffle_seed: int | None = None,
    decode: bool = True,
) -> Iterator[IDZoomRecord]:
    """One pass over the records of `paths` that belong to `consumer` of `num_consumers` (process x worker).

    With at least as many shards as consumers each consumer reads whole shards; otherwise every consumer reads
    all shards and keeps every `num_consumers`-th record, so tiny datasets still split evenly. `decode=False`:
    raw members, as `iter_shard`.
    """
    paths = list(paths)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(paths)
    if len(paths) >= num_consumers:
        for path in paths[consumer::num_consumers]:
            yield from iter_shard(path, decode)
        return
    index = 0
    for path in paths:
        for record in iter_shard(path, decode):
            if index % num_consumers == consumer:
                yield record
            index += 1


def read_dataset(directory: str | Path) -> list[IDZoomRecord]:
    """Every record of a dataset folder, in memory (for small sets, tests and validation)."""
    return [record for path in shard_paths(directory) for record in iter_shard(path)]
