"""MagicID-mini data: labelled face photos -> 128 px face crops, an identity-level split, and cached TAEF2 latents.

    python -m train.mini_data --photos DIR --identities identity_CelebA.txt --out data/mini [--limit N]

The photos are CelebA in-the-wild images (non-commercial research data: training only, never committed or shipped;
see train/README.md for where to get the 6,300-image subset). `--identities` maps file names to identity numbers
(`000001.jpg 2880` per line). Per photo: the largest MTCNN face, a square crop of `CROP_SCALE` x its box side centred
on it (mirrored where it leaves the photo), resized to 128 px and saved as JPEG; its face box and five points in crop
pixels go to `index.jsonl`. Every `HELD_OUT_EVERY`-th identity (sorted by number) is held out for evaluation. Then
`latents-128.safetensors` holds TAEF2 latents of every training crop and of its mirror image (the base stage), and
`idzoom/train/`, `idzoom/held_out/` hold IDZoom records of the crops (skeleton, landmarks, mask, dlib embedding;
the MMF stage and the evaluation), built by `train.build_dataset` with the faces found here.

Resumable: photos already in `index.jsonl` (or in `skipped.jsonl`) are not analysed again, and the latents are
recomputed only when the index has grown.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from magicid.errors import MagicIDError, TrainingDataError


logger = logging.getLogger(__name__)

CROP_SIDE = 128
CROP_SCALE = 1.8  # crop side / face box side: the whole head, some neck and background
HELD_OUT_EVERY = 10  # every 10th identity is never trained on (about 30 of CelebA's 299 here)
MIN_FACE_PX = 40
LATENTS_NAME = "latents-128.safetensors"
ENCODE_BATCH = 64


@dataclass
class FaceCrop:
    """One entry of `index.jsonl`."""

    file: str  # path of the crop, relative to the output folder
    source: str  # the photo's file name
    identity: int
    split: str  # "train" or "held_out"
    face_box: list[float]  # (x0, y0, x1, y1) in crop pixels
    kps5: list[list[float]]  # five points in crop pixels


def read_identities(path: Path) -> dict[str, int]:
    """`identity_CelebA.txt` lines `000001.jpg 2880` -> {file name: identity}."""
    identities = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            identities[parts[0]] = int(parts[1])
    if not identities:
        raise TrainingDataError(f"{path.name} has no 'file identity' lines")
    return identities


def split_of(identity: int, all_identities: list[int]) -> str:
    return "held_out" if all_identities.index(identity) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else "train"


def face_crop(image: Image.Image, box: np.ndarray) -> tuple[Image.Image, np.ndarray, float]:
    """The square `CROP_SCALE` x face crop at `CROP_SIDE` px (mirrored borders), its top-left corner, and its scale."""
    side = CROP_SCALE * max(box[2] - box[0], box[3] - box[1])
    centre = (box[:2] + box[2:]) / 2
    x0, y0 = (centre - side / 2).round().astype(int)
    pad = int(side)  # mirrored borders: no black bars for the model
    padded = Image.fromarray(np.pad(np.asarray(image), ((pad, pad), (pad, pad), (0, 0)), mode="symmetric"))
    crop = padded.crop((x0 + pad, y0 + pad, x0 + pad + int(side), y0 + pad + int(side)))
    return crop.resize((CROP_SIDE, CROP_SIDE), Image.Resampling.LANCZOS), np.array([x0, y0], float), CROP_SIDE / int(side)


def analyse(photo: Path, identity: int, split: str, out_dir: Path) -> FaceCrop:
    """Detect the main face of `photo` and save its crop; `TrainingDataError` with the reason when it is unusable."""
    from magicid.imageio import load_image
    from magicid.perception import detect_faces

    try:
        image = load_image(photo)
    except MagicIDError as error:
        raise TrainingDataError(f"unreadable: {error}") from error
    faces = detect_faces(image)
    if not faces:
        raise TrainingDataError("no face")
    face = faces[0]  # largest first
    if face.size < MIN_FACE_PX:
        raise TrainingDataError(f"face of {face.size:.0f} px")
    crop, corner, scale = face_crop(image.convert("RGB"), face.box)
    relative = Path("crops") / split / str(identity) / f"{photo.stem}.jpg"
    (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
    crop.save(out_dir / relative, quality=95)
    box = ((face.box - np.tile(corner, 2)) * scale).round(2)
    points = ((face.kps5 - corner) * scale).round(2)
    return FaceCrop(str(relative), photo.name, identity, split, box.tolist(), points.tolist())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def prepare(photos_dir: Path, identities_file: Path, out_dir: Path, limit: int | None = None) -> dict:
    """Crops and index (resumable), then latents; returns counts."""
    identities = read_identities(identities_file)
    photos = sorted(p for p in photos_dir.iterdir() if p.name in identities)[:limit]
    if not photos:
        raise TrainingDataError(f"no photo of {photos_dir} is listed in {identities_file.name}")
    everyone = sorted({identities[p.name] for p in photos})
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path, skipped_path = out_dir / "index.jsonl", out_dir / "skipped.jsonl"
    done = {entry["source"] for entry in read_jsonl(index_path) + read_jsonl(skipped_path)}
    with index_path.open("a") as index, skipped_path.open("a") as skipped:
        for photo in tqdm([p for p in photos if p.name not in done], desc="faces", unit="photo"):
            identity = identities[photo.name]
            try:
                entry = analyse(photo, identity, split_of(identity, everyone), out_dir)
            except TrainingDataError as reason:
                skipped.write(json.dumps({"source": photo.name, "reason": str(reason)}) + "\n")
                continue
            index.write(json.dumps(asdict(entry)) + "\n")
            index.flush()
    entries = read_jsonl(index_path)
    encode_latents(out_dir, [entry for entry in entries if entry["split"] == "train"])
    records = {split: build_records(out_dir, entries, split) for split in ("train", "held_out")}
    return {"records": records, "crops": len(entries), "train": sum(e["split"] == "train" for e in entries),
            "held_out": sum(e["split"] == "held_out" for e in entries), "skipped": len(read_jsonl(skipped_path)),
            "identities": len(everyone)}  # fmt: skip


@torch.no_grad()
def encode_latents(out_dir: Path, entries: list[dict]) -> Path:
    """TAEF2 latents (N, 32, 16, 16) of the training crops and of their mirror images, fp16, in index order."""
    from magicid.taef2 import SHIPPED, load_taef2

    path = out_dir / LATENTS_NAME
    if path.exists() and load_file(path)["latents"].shape[0] == len(entries):
        return path
    vae = load_taef2(SHIPPED)
    latents, flipped = [], []
    for start in tqdm(range(0, len(entries), ENCODE_BATCH), desc="latents", unit="batch"):
        chunk = entries[start : start + ENCODE_BATCH]
        pixels = torch.stack([_pixels(Image.open(out_dir / entry["file"])) for entry in chunk])
        latents.append(vae.encode(pixels).latents.half())
        flipped.append(vae.encode(pixels.flip(-1)).latents.half())
    save_file({"latents": torch.cat(latents), "flipped": torch.cat(flipped)}, path,
              metadata={"files": json.dumps([entry["file"] for entry in entries])})  # fmt: skip
    return path


def build_records(out_dir: Path, entries: list[dict], split: str) -> dict:
    """IDZoom records of one split's crops (resumable), reusing each crop's MTCNN face; the report summary."""
    from magicid.perception.faces import Face
    from train.build_dataset import BuildConfig, build_dataset

    crops = out_dir / "crops" / split
    faces = {
        Path(entry["file"]).relative_to(f"crops/{split}").as_posix(): Face(
            box=np.asarray(entry["face_box"], np.float64), score=1.0, kps5=np.asarray(entry["kps5"], np.float64))
        for entry in entries if entry["split"] == split
    }  # fmt: skip
    config = BuildConfig(min_side=CROP_SIDE, max_side=CROP_SIDE, face_crop_px=112, embedder="dlib",
                         records_per_shard=500, mask_blur_px=3)  # fmt: skip
    return build_dataset(crops, out_dir / "idzoom" / split, config, known_faces=faces)


def _pixels(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), np.float32) / 127.5 - 1).permute(2, 0, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.mini_data", description=__doc__.splitlines()[0])
    parser.add_argument("--photos", required=True, type=Path, help="folder of CelebA photos")
    parser.add_argument("--identities", required=True, type=Path, help="identity_CelebA.txt")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos (a quick look)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = prepare(args.photos, args.identities, args.out, args.limit)
    except (MagicIDError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
