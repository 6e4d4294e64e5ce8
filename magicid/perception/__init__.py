"""Perception: everything that reads a photo (faces, identities, poses, landmarks, face masks, similarity).

Every model is loaded on first use and cached per process; nothing here knows about Gradio.
"""

from magicid.perception.embedders import (
    ArcFaceEmbedder,
    DlibEmbedder,
    FaceEmbedder,
    get_face_embedder,
    identity_similarity,
    photo_similarity,
)
from magicid.perception.faces import Face, align_face, detect_faces, main_face
from magicid.perception.landmarks import draw_face_landmarks, face_landmarks
from magicid.perception.masks import face_region_mask
from magicid.perception.openpose import draw_openpose
from magicid.perception.poses import detect_poses


__all__ = [
    "ArcFaceEmbedder",
    "DlibEmbedder",
    "Face",
    "FaceEmbedder",
    "align_face",
    "detect_faces",
    "detect_poses",
    "draw_face_landmarks",
    "draw_openpose",
    "face_landmarks",
    "face_region_mask",
    "get_face_embedder",
    "identity_similarity",
    "main_face",
    "photo_similarity",
]
