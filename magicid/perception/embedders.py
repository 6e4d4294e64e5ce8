"""Identity embeddings: ArcFace (insightface ONNX) where its model files exist, else dlib's 128-d descriptor."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from magicid.errors import MissingWeightsError
from magicid.perception import models
from magicid.perception.faces import Face, align_face, crop_around, main_face


ARCFACE_FILES = tuple((pack, recognition) for pack, _, recognition in models.INSIGHTFACE_PACKS)


@runtime_checkable
class FaceEmbedder(Protocol):
    name: str
    dim: int

    def embed(self, image: Image.Image, face: Face) -> np.ndarray:
        """(dim,) float32, L2-normalised identity embedding of `face` in `image`."""
        ...


class ArcFaceEmbedder:
    """insightface ArcFace recognition ONNX on the 112 px ArcFace-aligned crop (512-d)."""

    name = "arcface"
    dim = 512

    def __init__(self, model_path: Path):
        from insightface.model_zoo import get_model

        self.model_path = model_path
        self._model = get_model(str(model_path), providers=models.onnx_providers())

    def embed(self, image: Image.Image, face: Face) -> np.ndarray:
        aligned_bgr = np.asarray(align_face(image, face, 112))[:, :, ::-1]
        with models.ONNX_LOCK:
            feature = self._model.get_feat(np.ascontiguousarray(aligned_bgr)).reshape(-1)
        return l2_normalize(feature)


class DlibEmbedder:
    """dlib ResNet face descriptor (128-d) on dlib's own 5-point alignment inside the detected box."""

    name = "dlib"
    dim = 128

    def embed(self, image: Image.Image, face: Face) -> np.ndarray:
        import dlib

        crop, offset = crop_around(image, face.box, grow=0.5)  # keeps big photos cheap
        pixels = np.ascontiguousarray(np.asarray(crop.convert("RGB")))
        x0, y0, x1, y1 = (face.box - np.tile(offset, 2)).round().astype(int)
        with models.DLIB_LOCK:
            shape = models.dlib_shape_predictor_5()(pixels, dlib.rectangle(x0, y0, x1, y1))
            descriptor = models.dlib_face_recognizer().compute_face_descriptor(pixels, shape)
        return l2_normalize(np.asarray(descriptor))


insightface_root = models.insightface_root


def find_arcface_model(root: Path | None = None) -> Path | None:
    root = root or insightface_root()
    for pack, filename in ARCFACE_FILES:
        path = root / "models" / pack / filename
        if path.is_file():
            return path
    return None


def get_face_embedder(prefer: str = "auto", root: str | os.PathLike | None = None) -> FaceEmbedder:
    """`auto`: ArcFace if its ONNX exists locally, else dlib. `arcface` / `dlib` force one. Cached per process.

    `root` is the insightface folder holding `models/<pack>/` (default: `insightface_root()`).
    """
    if prefer not in ("auto", "arcface", "dlib"):
        raise ValueError(f"Unknown face embedder {prefer!r}; choose auto, arcface or dlib")
    if prefer == "dlib":
        return _dlib_embedder()
    root = Path(root) if root is not None else insightface_root()
    model_path = find_arcface_model(root)
    if model_path is not None:
        return _arcface_embedder(model_path)
    if prefer == "arcface":
        wanted = " or ".join(f"{root}/models/{pack}/{filename}" for pack, filename in ARCFACE_FILES)
        raise MissingWeightsError(
            f"ArcFace weights not found: put {wanted} there "
            "(or set MAGICID_INSIGHTFACE_ROOT), or use the dlib embedder"
        )
    return _dlib_embedder()


@lru_cache(maxsize=None)
def _arcface_embedder(model_path: Path) -> ArcFaceEmbedder:
    return ArcFaceEmbedder(model_path)


@lru_cache(maxsize=1)
def _dlib_embedder() -> DlibEmbedder:
    return DlibEmbedder()


def l2_normalize(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def identity_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two identity embeddings."""
    return float(np.dot(l2_normalize(a), l2_normalize(b)))


def photo_similarity(a: Image.Image, b: Image.Image, embedder: FaceEmbedder | None = None) -> float:
    """Identity similarity of the main (largest) faces of two photos."""
    embedder = embedder or get_face_embedder()
    embeddings = []
    for image in (a, b):
        face, _ = main_face(image)
        embeddings.append(embedder.embed(image, face))
    return identity_similarity(*embeddings)


__all__ = [
    "ArcFaceEmbedder",
    "DlibEmbedder",
    "FaceEmbedder",
    "find_arcface_model",
    "get_face_embedder",
    "identity_similarity",
    "photo_similarity",
]
