"""IDZoom data engine: a folder of photos -> sharded records with six modalities, and a report of what was dropped.

    python -m train.build_dataset --images DIR --out DIR [--captions captions.jsonl] [--records-per-shard N]

Filters (paper, "Data Engine IDZoom"): resolution, repeats (near-duplicates of a kept photo), clarity (variance of the Laplacian of the face), exactly one
face, skeleton quality (nose, neck and both shoulders present) and landmark quality (enough points, inside the
face). Captions come from `captions.jsonl` (`{"file": "relative/path.jpg", "caption": "..."}` per line) or a
`<photo>.txt` next to each photo; otherwise `default_caption`. Rerunning on the same `--out` resumes: photos in
finished shards, and photos the report already dropped, are skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from magicid.errors import MagicIDError, TrainingDataError
from train.idzoom import IDZoomRecord, ShardWriter, finished_sources


logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
MAIN_JOINTS = {0: "nose", 1: "neck", 2: "right shoulder", 5: "left shoulder"}
HEAD_JOINTS = (0, 14, 15, 16, 17)
REPORT_NAME = "report.json"
BLUR_SIDE = 128  # the face is resized to this before measuring sharpness, so the measure is size-independent


@dataclass
class BuildConfig:
    """Data engine settings (filters and storage)."""

    min_side: int = 256  # shorter image side, px
    min_side_by_source: dict[str, int] = field(default_factory=dict)  # source path prefix -> min_side, e.g. {"celeba/": 128}
    min_face_px: int = 24  # face box side, px (full-body shots keep faces of ~30 px)
    blur_threshold: float = 20.0  # variance of the Laplacian of the face at 128 px; below: blurry
    min_landmarks: int = 68
    min_landmarks_inside: float = 0.8  # share of landmarks inside the face box grown by half its size
    max_side: int = 1024  # stored images are downscaled to this
    face_crop_px: int = 224  # aligned face crop, the CLIP-vision input size
    records_per_shard: int = 1000
    embedder: str = "auto"
    default_caption: str = "a photo of a person"
    mask_blur_px: int = 7
    duplicate_bits: int = 6  # photos whose 64-bit difference hashes differ in at most this many bits are one photo
    keep_landmark_only: bool = True  # a face without a usable skeleton (a close-up) is kept for the landmark condition

    def min_side_for(self, source: str) -> int:
        """`min_side` of the longest `min_side_by_source` prefix `source` starts with, else `min_side`."""
        prefixes = [prefix for prefix in self.min_side_by_source if source.startswith(prefix)]
        return self.min_side_by_source[max(prefixes, key=len)] if prefixes else self.min_side


class Rejected(Exception):
    """A photo the filters drop: `code` is machine-readable, the message says why."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code


def list_photos(images_dir: Path) -> list[Path]:
    if not images_dir.is_dir():
        raise TrainingDataError(f"--images {images_dir} is not a folder: point it at a folder of photos")
    photos = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not photos:
        raise TrainingDataError(f"no photos (jpg, png, webp, bmp) under {images_dir}")
    return photos


def load_captions(images_dir: Path, captions_file: Path | None = None) -> dict[str, str]:
    """Relative path -> caption from a JSONL sidecar (`captions.jsonl` in the folder unless given)."""
    path = captions_file or images_dir / "captions.jsonl"
    if not path.exists():
        if captions_file is not None:
            raise TrainingDataError(f"captions file {captions_file} not found")
        return {}
    captions = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                entry = json.loads(line)
                captions[entry["file"]] = entry["caption"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise TrainingDataError(f'{path} line {number}: expected {{"file": ..., "caption": ...}}') from error
    return captions


def caption_for(photo: Path, source: str, captions: dict[str, str], default: str) -> str:
    if source in captions:
        return captions[source]
    sidecar = photo.with_suffix(".txt")
    return sidecar.read_text().strip() if sidecar.exists() else default


def record_key(source: str) -> str:
    """A tar-safe unique key (no dots: the key ends at the first dot of a member name)."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", source.rsplit(".", 1)[0]).strip("_")[-60:]
    return f"{stem}_{hashlib.sha1(source.encode()).hexdigest()[:8]}"


def sharpness(image: Image.Image, box: np.ndarray) -> float:
    """Variance of the Laplacian of the face region, resized to `BLUR_SIDE` px."""
    face = image.crop(tuple(int(round(v)) for v in box)).convert("L").resize((BLUR_SIDE, BLUR_SIDE))
    return float(cv2.Laplacian(np.asarray(face, dtype=np.float64), cv2.CV_64F).var())


def image_hash(image: Image.Image) -> int:
    """A 64-bit difference hash: re-encoded, resized or lightly edited copies of a photo keep nearly all bits."""
    small = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if bit else "0" for bit in bits), 2)


def check_repeats(fingerprint: int, kept_hashes: dict[str, int], max_bits: int) -> None:
    """IDZoom's repeatability filter: a near-duplicate of a photo already kept is dropped."""
    for source, other in kept_hashes.items():
        if bin(fingerprint ^ other).count("1") <= max_bits:
            raise Rejected("duplicate", f"near-duplicate of {source}")


def pose_of_face(poses: list[np.ndarray], box: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """The skeleton whose head joints fall inside the (grown) face box, best covered first; None if none does."""
    width, height = size
    side = max(box[2] - box[0], box[3] - box[1])
    grown = box + np.array([-side, -side, side, side]) * 0.5
    best, best_count = None, 0
    for pose in poses:
        head = pose[list(HEAD_JOINTS)]
        points = head[head[:, 2] > 0, :2] * np.array([width, height])
        inside = np.all((points >= grown[:2]) & (points <= grown[2:]), axis=1).sum() if len(points) else 0
        if inside > best_count:
            best, best_count = pose, int(inside)
    return best


def check_skeleton(pose: np.ndarray | None) -> None:
    if pose is None:
        raise Rejected("skeleton", "no skeleton found for the face")
    missing = [name for index, name in MAIN_JOINTS.items() if pose[index, 2] <= 0]
    if missing:
        raise Rejected("skeleton", f"skeleton incomplete: missing {', '.join(missing)}")


def check_landmarks(landmarks: np.ndarray, box: np.ndarray, config: BuildConfig) -> None:
    if len(landmarks) < config.min_landmarks:
        raise Rejected("landmarks", f"only {len(landmarks)} face landmarks (need {config.min_landmarks})")
    side = max(box[2] - box[0], box[3] - box[1])
    grown = box + np.array([-side, -side, side, side]) * 0.5
    inside = np.mean(np.all((landmarks >= grown[:2]) & (landmarks <= grown[2:]), axis=1))
    if inside < config.min_landmarks_inside:
        raise Rejected("landmarks", f"face landmarks off the face ({inside:.0%} inside its box)")


def downscale(image: Image.Image, max_side: int) -> Image.Image:
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)


def make_record(photo: Path, source: str, caption: str, config: BuildConfig, embedder,
                kept_hashes: dict[str, int] | None = None, known_face=None) -> IDZoomRecord:  # fmt: skip
    """Run the filters and perception on one photo; raise `Rejected` with the reason it is dropped.
    `kept_hashes`: source -> `image_hash` of the photos kept so far, for the repeatability filter. `known_face`: the
    photo's only face, already detected (e.g. by `train.mini_data`), instead of detecting again."""
    from magicid import perception
    from magicid.imageio import load_image

    try:
        image = load_image(photo)
    except MagicIDError as error:
        raise Rejected("unreadable", str(error)) from error
    min_side = config.min_side_for(source)
    if min(image.size) < min_side:
        raise Rejected("low_resolution", f"{image.width}x{image.height} is below {min_side} px")
    fingerprint = image_hash(image)
    check_repeats(fingerprint, kept_hashes or {}, config.duplicate_bits)
    if known_face is not None and max(image.size) > config.max_side:
        raise Rejected("too_large", f"a known face needs the photo at its own size (at most {config.max_side} px)")
    image = downscale(image, config.max_side)
    faces = [known_face] if known_face is not None else perception.detect_faces(image)
    if not faces:
        raise Rejected("no_face", "no face found")
    if len(faces) > 1:
        raise Rejected("multiple_faces", f"more than one face ({len(faces)} found)")
    face = faces[0]
    if face.size < config.min_face_px:
        raise Rejected("small_face", f"face of {face.size:.0f} px is below {config.min_face_px} px")
    clarity = sharpness(image, face.box)
    if clarity < config.blur_threshold:
        raise Rejected("blurry", f"blurry face (variance of Laplacian {clarity:.1f} < {config.blur_threshold})")
    pose = pose_of_face(perception.detect_poses(image, faces=[face]), face.box, image.size)
    try:
        check_skeleton(pose)
    except Rejected:
        if not config.keep_landmark_only:
            raise
        pose = None  # a landmark-only record: it shows its landmarks in every stage (`train.dataset`)
    landmarks = perception.face_landmarks(image, face)
    check_landmarks(landmarks, face.box, config)
    return IDZoomRecord(
        key=record_key(source),
        source=source,
        caption=caption,
        image=image,
        skeleton=perception.draw_openpose([] if pose is None else [pose], *image.size),
        keypoints=np.zeros((18, 3), np.float32) if pose is None else pose.astype(np.float32),
        face=perception.align_face(image, face, config.face_crop_px),
        landmarks_image=perception.draw_face_landmarks([landmarks], *image.size),
        landmarks=landmarks.astype(np.float32),
        mask=np.asarray(perception.face_region_mask(image, face, landmarks, blur_px=config.mask_blur_px), np.float32),
        face_box=face.box.astype(np.float64),
        face_kps5=face.kps5.astype(np.float64),
        embedding=np.asarray(embedder.embed(image, face), dtype=np.float32),
        embedder=embedder.name,
        extra={"sharpness": round(clarity, 2), "face_score": round(float(face.score), 4), "image_hash": fingerprint,
               "conditions": "landmarks" if pose is None else "all"},  # fmt: skip
    )


class Report:
    """What was kept and dropped, and why; saved as `report.json` in the output folder (merged on resume)."""

    def __init__(self, path: Path):
        self.path = path
        self.items: dict[str, dict] = {}
        if path.exists():
            self.items = {item["source"]: item for item in json.loads(path.read_text())["items"]}

    def kept(self, source: str, key: str, fingerprint: int | None = None, conditions: str = "all") -> None:
        self.items[source] = {"source": source, "status": "kept", "key": key, "image_hash": fingerprint,
                              "conditions": conditions}  # fmt: skip

    def kept_hashes(self) -> dict[str, int]:
        """source -> image hash of every kept photo (for the repeatability filter, across resumes)."""
        return {source: item["image_hash"] for source, item in self.items.items()
                if item["status"] == "kept" and item.get("image_hash") is not None}  # fmt: skip

    def dropped(self, source: str, code: str, reason: str) -> None:
        self.items[source] = {"source": source, "status": "dropped", "code": code, "reason": reason}

    def dropped_sources(self) -> set[str]:
        return {source for source, item in self.items.items() if item["status"] == "dropped"}

    def summary(self) -> dict:
        statuses = Counter(item["status"] for item in self.items.values())
        codes = Counter(item["code"] for item in self.items.values() if item["status"] == "dropped")
        landmark_only = sum(item.get("conditions") == "landmarks" for item in self.items.values())
        return {"kept": statuses["kept"], "landmark_only": landmark_only, "dropped": statuses["dropped"],
                "dropped_by_reason": dict(codes)}  # fmt: skip

    def save(self, config: BuildConfig) -> None:
        data = {**self.summary(), "config": asdict(config), "items": sorted(self.items.values(), key=_by_source)}
        self.path.write_text(json.dumps(data, indent=1))


def _by_source(item: dict) -> str:
    return item["source"]


def build_dataset(
    images_dir: str | Path,
    out_dir: str | Path,
    config: BuildConfig | None = None,
    captions_file: str | Path | None = None,
    known_faces: dict | None = None,
) -> dict:
    """Build (or resume) an IDZoom dataset from the photos under `images_dir`; return the report summary.
    `known_faces`: source -> its one `Face`, for photos whose face was already detected."""
    from magicid.perception import get_face_embedder

    config = config or BuildConfig()
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    photos = list_photos(images_dir)
    captions = load_captions(images_dir, Path(captions_file) if captions_file else None)
    embedder = get_face_embedder(config.embedder)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir / REPORT_NAME)
    finished = finished_sources(out_dir)
    skip = finished | report.dropped_sources()
    kept_hashes = {source: value for source, value in report.kept_hashes().items() if source in finished}
    with ShardWriter(out_dir, config.records_per_shard) as writer:
        for photo in tqdm(photos, desc="IDZoom", unit="photo"):
            source = photo.relative_to(images_dir).as_posix()
            if source in skip:
                continue
            try:
                record = make_record(photo, source, caption_for(photo, source, captions, config.default_caption),
                                     config, embedder, kept_hashes, (known_faces or {}).get(source))  # fmt: skip
            except Rejected as rejection:
                report.dropped(source, rejection.code, str(rejection))
                logger.info("dropped %s: %s", source, rejection)
                continue
            writer.write(record)
            report.kept(source, record.key, record.extra["image_hash"], record.extra["conditions"])
            kept_hashes[source] = record.extra["image_hash"]
            if writer.pending == 0:  # a shard was just finished: persist progress
                report.save(config)
    report.save(config)
    return report.summary()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.build_dataset", description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, type=Path, help="folder of photos (searched recursively)")
    parser.add_argument("--out", required=True, type=Path, help="output folder for shards and report.json")
    parser.add_argument("--captions", type=Path, default=None, help="JSONL sidecar (default: IMAGES/captions.jsonl)")
    for spec in fields(BuildConfig):
        flag = "--" + spec.name.replace("_", "-")
        if spec.name == "min_side_by_source":
            parser.add_argument("--min-side-for", dest=spec.name, action="append", type=_prefix_side, default=[],
                                metavar="PREFIX=PX", help="min_side for sources under PREFIX (repeatable)")  # fmt: skip
        elif isinstance(spec.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=spec.default)
        else:
            parser.add_argument(flag, type=type(spec.default), default=spec.default, help=f"default: {spec.default}")
    args = parser.parse_args(argv)
    args.min_side_by_source = dict(args.min_side_by_source)
    return args


def _prefix_side(text: str) -> tuple[str, int]:
    prefix, _, side = text.rpartition("=")
    if not prefix or not side.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: use PREFIX=PX, e.g. celeba/=128")
    return prefix, int(side)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = BuildConfig(**{spec.name: getattr(args, spec.name) for spec in fields(BuildConfig)})
    try:
        summary = build_dataset(args.images, args.out, config, args.captions)
    except MagicIDError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
