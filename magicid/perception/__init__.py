"""Perception: everything that reads a photo (faces, identities, poses, landmarks, face masks, similarity)."""

from magicid.perception.embedders import (
    ArcFaceEmbedder,
    DlibEmbedder,
    FaceEmbedder,
    get_face_embedder,
    identity_similarity,
    photo_similarity,
)
from magicid.perception.faces import Face, align_face, detect_faces, main_face

__all__ = [
    "ArcFaceEmbedder",
    "DlibEmbedder",
    "Face",
    "FaceEmbedder",
    "align_face",
    "detect_faces",
    "get_face_embedder",
    "identity_similarity",
    "main_face",
    "photo_similarity",
]
