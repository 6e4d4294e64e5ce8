"""Lazily loaded, process-cached perception models (nothing loads at import time).

Offline models come from registry packages: facenet-pytorch MTCNN, dlib + face_recognition_models, mediapipe
0.10.21 (bundled .tflite). The cached objects keep per-call state (mediapipe graphs, dlib's network buffers), so
each family is used under its lock.
"""

from __future__ import annotations

import threading
from functools import lru_cache

MEDIAPIPE_LOCK = threading.Lock()
TORCH_LOCK = threading.Lock()
DLIB_LOCK = threading.Lock()
ONNX_LOCK = threading.Lock()


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
    import mediapipe as mp

    return mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.3
    )


@lru_cache(maxsize=1)
def blaze_pose():
    """mediapipe BlazePose full (model_complexity=1 is the only one bundled in the wheel)."""
    import mediapipe as mp

    return mp.solutions.pose.Pose(
        static_image_mode=True, model_complexity=1, enable_segmentation=False, min_detection_confidence=0.3
    )


@lru_cache(maxsize=1)
def selfie_segmentation():
    import mediapipe as mp

    return mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
