"""IDZoom records -> training tensors: a face-centred square crop at the training resolution, both condition images,
the face box (for Clone Face Tuning), the face embedding, CLIP-vision pixels of the aligned face, caption tokens
(10% null text). A streaming `IterableDataset` that splits shards over processes and dataloader workers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from magicid.errors import TrainingDataError
from train.idzoom import IDZoomRecord, iter_records, shard_paths


MASK_THRESHOLD = 0.5


def face_square(size: tuple[int, int], face_box: np.ndarray) -> tuple[int, int, int, int]:
    """The largest square crop of an image of `size` that is centred on the face as far as the borders allow."""
    width, height = size
    side = min(width, height)
    center_x, center_y = (face_box[0] + face_box[2]) / 2, (face_box[1] + face_box[3]) / 2
    x0 = int(round(min(max(center_x - side / 2, 0), width - side)))
    y0 = int(round(min(max(center_y - side / 2, 0), height - side)))
    return x0, y0, x0 + side, y0 + side


@dataclass(frozen=True)
class Reframe:
    """Random framing of a record (MagicID-mini: its crops are aligned, so without this every sample has the same
    landmarks and the ControlNet has nothing to follow). The crop side is `min_scale`..`max_scale` x the face square,
    and the face centre lands anywhere in the middle `1 - 2 * margin` of it. Outside the photo it is mirrored, by at
    most `max_outside` x the photo's side: further out the mirror image would show a second, partial face."""

    min_scale: float = 0.75
    max_scale: float = 1.35
    margin: float = 0.25
    max_outside: float = 0.2

    def crop(self, size: tuple[int, int], face_box: np.ndarray, rng: random.Random) -> tuple[int, int, int, int]:
        side = min(size) * rng.uniform(self.min_scale, self.max_scale)
        center_x, center_y = (face_box[0] + face_box[2]) / 2, (face_box[1] + face_box[3]) / 2
        x0 = self._inside(center_x - side * rng.uniform(self.margin, 1 - self.margin), side, size[0])
        y0 = self._inside(center_y - side * rng.uniform(self.margin, 1 - self.margin), side, size[1])
        x0, y0, side = int(round(x0)), int(round(y0)), int(round(side))
        return x0, y0, x0 + side, y0 + side

    def _inside(self, start: float, side: float, extent: int) -> float:
        outside = self.max_outside * extent
        return min(max(start, -outside), extent + outside - side)


def crop_mirrored(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """`image.crop(box)` where a box that leaves the image sees it mirrored at its borders (not black)."""
    width, height = image.size
    pad = max(0, -box[0], -box[1], box[2] - width, box[3] - height)
    if pad == 0:
        return image.crop(box)
    pixels = np.asarray(image)
    widths = ((pad, pad), (pad, pad)) + ((0, 0),) * (pixels.ndim - 2)
    padded = Image.fromarray(np.pad(pixels, widths, mode="symmetric"))
    return padded.crop((box[0] + pad, box[1] + pad, box[2] + pad, box[3] + pad))


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """Normalised (x0, y0, x1, y1) bounding box of the mask's face region, or None if it is empty."""
    rows = np.flatnonzero(mask.max(axis=1) >= MASK_THRESHOLD)
    cols = np.flatnonzero(mask.max(axis=0) >= MASK_THRESHOLD)
    if len(rows) == 0:
        return None
    height, width = mask.shape
    return np.array([cols[0] / width, rows[0] / height, (cols[-1] + 1) / width, (rows[-1] + 1) / height])


def image_tensor(image: Image.Image, resolution: int, normalize: bool) -> torch.Tensor:
    resized = image.convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return pixels * 2 - 1 if normalize else pixels


def training_example(
    record: IDZoomRecord, resolution: int, tokenizer, feature_extractor, null_text: bool,
    crop: tuple[int, int, int, int] | None = None,
) -> dict[str, torch.Tensor]:
    """The tensors of one record (see the module docstring); `null_text` replaces the caption by "". `crop` (default:
    the face square) is the region of the record's images to train on; condition images are black outside them."""
    crop = crop or face_square(record.image.size, record.face_box)
    mask = np.asarray(Image.fromarray(record.mask).crop(crop).resize((resolution, resolution)), dtype=np.float32)
    box = mask_box(mask)
    if box is None:
        side = crop[2] - crop[0]
        box = np.clip((record.face_box - np.array(crop[:2] * 2)) / side, 0, 1)
    tokens = tokenizer(
        "" if null_text else record.caption,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return {
        "pixel_values": image_tensor(crop_mirrored(record.image, crop), resolution, normalize=True),
        "skeleton": image_tensor(record.skeleton.crop(crop), resolution, normalize=False),
        "landmarks": image_tensor(record.landmarks_image.crop(crop), resolution, normalize=False),
        "face_box": torch.from_numpy(box.astype(np.float64)),
        "face_embeds": torch.from_numpy(np.asarray(record.embedding, dtype=np.float32)),
        "clip_pixel_values": feature_extractor(images=record.face, return_tensors="pt").pixel_values[0],
        "input_ids": tokens.input_ids[0],
        "has_skeleton": torch.tensor(bool(np.asarray(record.keypoints)[:, 2].max() > 0)),
    }


class MMFDataset(IterableDataset):
    """Endless stream of training examples for process `rank` of `world_size`, shuffled with a bounded buffer.

    Each example also carries `key` (the record's), and `stream_consumer`, `stream_epoch`, `stream_position`: which
    consumer (process x dataloader worker) streamed it, in which epoch, at which position of that epoch's order.
    An epoch's order depends only on (seed, consumer, epoch), so `start` ({consumer: (epoch, position)} of each
    consumer's next example) resumes a stream exactly: that epoch is replayed and its first `position` records are
    skipped undecoded. `worker_offset` rotates which dataloader worker plays which consumer, so that the workers'
    batch-by-batch turns continue where they stopped too (see `train.train_mmf.StreamState`).
    """

    def __init__(
        self,
        data_dir: str | Path,
        resolution: int,
        tokenizer,
        feature_extractor,
        null_text_prob: float = 0.1,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 512,
        start: dict[int, tuple[int, int]] | None = None,
        worker_offset: int = 0,
        reframe: Reframe | None = None,
    ):
        self.paths = shard_paths(data_dir)
        if not self.paths:
            raise TrainingDataError(
                f"no finished shards (shard-*.tar) in {data_dir}: run python -m train.build_dataset"
            )
        self.resolution, self.tokenizer, self.feature_extractor = resolution, tokenizer, feature_extractor
        self.null_text_prob, self.rank, self.world_size = null_text_prob, rank, world_size
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.start, self.worker_offset = dict(start or {}), worker_offset
        self.reframe = reframe

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        consumer = self.rank * workers + (worker_id + self.worker_offset) % workers
        consumers = self.world_size * workers
        epoch, skip = self.start.get(consumer, (0, 0))
        while True:
            produced = False
            for position, members, null_text in self.epoch_order(consumer, consumers, epoch):
                produced = True
                if position >= skip:
                    yield self._example(members, null_text, (consumer, epoch, position))
            if not produced:
                raise TrainingDataError(f"consumer {consumer} of {consumers} got no records: use more shards or data")
            epoch, skip = epoch + 1, 0

    def epoch_order(self, consumer: int, consumers: int, epoch: int) -> Iterator[tuple[int, dict, bool]]:
        """(position, raw record members, null text?) of one epoch of a consumer, a function of (seed, consumer,
        epoch) only."""
        rng = random.Random((self.seed * 1000 + consumer) * 1_000_003 + epoch)
        records = iter_records(self.paths, consumer, consumers, shuffle_seed=self.seed + epoch, decode=False)
        for position, members in enumerate(shuffled(records, self.shuffle_buffer, rng)):
            yield position, members, rng.random() < self.null_text_prob

    def _example(self, members: dict, null_text: bool, origin: tuple[int, int, int]) -> dict:
        record = IDZoomRecord.from_members(members)
        consumer, epoch, position = origin
        crop = None
        if self.reframe:  # seeded by the example's place in the stream, so a resumed run frames it the same way
            rng = random.Random(hash((self.seed, consumer, epoch, position)))
            crop = self.reframe.crop(record.image.size, record.face_box, rng)
        example = training_example(record, self.resolution, self.tokenizer, self.feature_extractor, null_text, crop)
        return {**example, "key": record.key, "person": person_of(record.source), "stream_consumer": consumer,
                "stream_epoch": epoch, "stream_position": position}  # fmt: skip


def person_of(source: str) -> str:
    """Who a record shows: its photo's folder (one sub-folder per person, as `train.mini_data` writes); a photo
    outside any sub-folder counts as a person of its own."""
    folder = PurePosixPath(source).parent.as_posix()
    return source if folder in ("", ".") else folder


def shuffled(items: Iterator, buffer_size: int, rng: random.Random) -> Iterator:
    """Streaming shuffle: keep `buffer_size` items, emit a random one as each new item arrives."""
    buffer = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= buffer_size:
            yield buffer.pop(rng.randrange(len(buffer)))
    rng.shuffle(buffer)
    yield from buffer


def condition_images(batch: dict[str, torch.Tensor], condition: str, generator: torch.Generator) -> torch.Tensor:
    """The ControlNet's condition image for a stage: landmarks, skeleton, or (`all`) per sample one of
    landmarks / skeleton / both drawn together, so the model learns every mode it is used in. Landmark-only records
    (face close-ups with no usable skeleton, `has_skeleton` False) show their landmarks in every stage."""
    skeleton, landmarks = batch["skeleton"], batch["landmarks"]
    if condition == "landmarks":
        return landmarks
    has_skeleton = batch.get("has_skeleton", torch.ones(skeleton.shape[0], dtype=torch.bool)).view(-1, 1, 1, 1)
    if condition == "skeleton":
        return torch.where(has_skeleton, skeleton, landmarks)
    choice = torch.randint(0, 3, (skeleton.shape[0],), generator=generator).view(-1, 1, 1, 1)
    choice = torch.where(has_skeleton, choice, torch.zeros_like(choice))
    both = torch.maximum(skeleton, landmarks)
    return torch.where(choice == 0, landmarks, torch.where(choice == 1, skeleton, both))
