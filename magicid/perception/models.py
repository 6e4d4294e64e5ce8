"""Lazily loaded, process-cached perception models (nothing loads at import time).

Offline models come from registry packages: facenet-pytorch MTCNN, dlib + face_recognition_models, mediapipe
0.10.21 (bundled .tflite). The cached objects keep per-call state (mediapipe graphs, dlib's network buffers), so
each family is used under its lock.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path


MEDIAPIPE_LOCK = threading.Lock()
TORCH_LOCK = threading.Lock()
DLIB_LOCK = threading.Lock()
ONNX_LOCK = threading.Lock()


# insightface model packs, preferred first: (pack, detector file, recognition file). buffalo_l (w600k_r50) comes
# first because IP-Adapter-FaceID was trained on its embeddings; antelopev2's glintr100 is another embedding space.
INSIGHTFACE_PACKS = (
    ("buffalo_l", "det_10g.onnx", "w600k_r50.onnx"),
    ("antelopev2", "scrfd_10g_bnkps.onnx", "glintr100.onnx"),
)


def insightface_root() -> Path:
    """Where insightface model packs live: env MAGICID_INSIGHTFACE_ROOT, else ~/.insightface."""
    return Path(os.environ.get("MAGICID_INSIGHTFACE_ROOT") or Path.home() / ".insightface")


def onnx_providers() -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def find_scrfd_model(root: Path | None = None) -> Path | None:
    root = root or insightface_root()
    for pack, detector, _ in INSIGHTFACE_PACKS:
        if (root / "models" / pack / detector).is_file():
            return root / "models" / pack / detector
    return None


def scrfd():
    """insightface SCRFD detector if a model pack is on disk, else None (then MTCNN is used)."""
    path = find_scrfd_model()
    return _scrfd(path) if path is not None else None


@lru_cache(maxsize=None)
def _scrfd(path: Path):
    from insightface.model_zoo import get_model

    detector = get_model(str(path), providers=onnx_providers())
    detector.prepare(ctx_id=0, det_thresh=0.5)
    return detector


@lru_cache(maxsize=1)
def mtcnn():
    """facenet-pytorch MTCNN (boxes + 5 points), CPU."""
    from facenet_pytorch import MTCNN

    # stricter P-/R-net thresholds than the default (0.6, 0.7, 0.7) halve the candidates (and the CPU time) with the
    # same counts on the test photos; O-net's 0.9 matches the score we keep anyway
    return MTCNN(keep_all=True, min_face_size=20, thresholds=[0.8, 0.85, 0.9], post_process=False, device="cpu")


@lru_cache(maxsize=1)
def dlib_shape_predictor_5():
    import dlib
    import face_recognition_models

    return dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())


@lru_cache(maxsize=1)
def dlib_shape_predictor_68():
    import dlib
    import face_recognition_models

    return dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())


@lru_cache(maxsize=1)
def dlib_face_recognizer():
    import dlib
    import face_recognition_models

    return dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())


@lru_cache(maxsize=1)
def face_mesh():
    """mediapipe FaceMesh, one face per call (we feed crops), 478 points with irises."""
    mp = _mediapipe()

    return mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.3
    )


@lru_cache(maxsize=1)
def blaze_pose():
    """mediapipe BlazePose full (model_complexity=1 is the only one bundled in the wheel)."""
    mp = _mediapipe()

    return mp.solutions.pose.Pose(
        static_image_mode=True, model_complexity=1, enable_segmentation=False, min_detection_confidence=0.3
    )


@lru_cache(maxsize=1)
def selfie_segmentation():
    mp = _mediapipe()

    return mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)


def _mediapipe():
    import mediapipe

    return mediapipe


def run_mediapipe(solution, pixels):
    """`solution.process(pixels)` under the mediapipe lock, with the process's stderr closed meanwhile: TFLite and
    absl print lines from native threads (XNNPACK delegate, feedback manager, landmark projection) that no user
    can act on. Other threads' stderr writes in that window are lost; mediapipe calls take milliseconds."""
    with MEDIAPIPE_LOCK, _native_stderr_silenced():
        return solution.process(pixels)


@contextmanager
def _native_stderr_silenced():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
