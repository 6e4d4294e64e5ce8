"""FaceSim for group photos (paper, metrics): a generated face counts for identity i only inside region i.

A face is matched to identity i only if IoU(face box, region_i) > 0.5; an identity with no such face scores 0
("missing"). Identity similarity is the cosine of the face embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from magicid.face_regions import iou
from magicid.perception.analysis import ImageAnalysis
from magicid.perception.embedders import FaceEmbedder, get_face_embedder, identity_similarity
from magicid.perception.faces import Face


IOU_THRESHOLD = 0.5
# dlib: its documented 0.6 Euclidean cut on raw descriptors (norm ~1.4) is ~0.43 on unit vectors, cos ~0.91;
# ArcFace: the usual verification cut on normalised embeddings; fr_feature (the evaluation judge): between the
# different-person maximum (0.25) and the same-person minimum (0.41) measured on 35 portraits of 12 people
SAME_PERSON_COSINE = {"dlib": 0.91, "arcface": 0.3, "fr_feature": 0.35}


@dataclass
class FaceMatch:
    """How identity `identity` came out in a generated group photo."""

    identity: int
    similarity: float  # 0 when missing
    iou: float  # IoU of the matched face with the identity's region (best overlap when missing)
    face_box: np.ndarray | None  # the matched generated face, pixels
    status: str  # "ok" | "missing" | "duplicate" | "misplaced"


def face_sim(
    image: Image.Image | ImageAnalysis,
    regions: list[np.ndarray],
    references: list[np.ndarray],
    embedder: FaceEmbedder | None = None,
) -> list[FaceMatch]:
    """Per-identity FaceSim of a generated group photo (or of its `ImageAnalysis`, whose faces and embeddings are
    then reused).

    `regions[i]` is the box (pixels) where identity i was placed and `references[i]` its embedding. Status:
    - "ok": a face overlaps the region with IoU > 0.5 and is scored against the reference;
    - "missing": no such face, similarity 0;
    - "misplaced": no such face, but a face elsewhere is recognised as this identity (same-person threshold);
    - "duplicate": the region's face is scored, but a second face is recognised as this identity too (a clone).
    """
    if len(regions) != len(references):
        raise ValueError(f"{len(regions)} regions but {len(references)} references")
    embedder = embedder or get_face_embedder()
    analysis = ImageAnalysis.of(image)
    faces, embeddings = analysis.faces, analysis.embeddings(embedder)
    similarity = np.array([[identity_similarity(ref, emb) for emb in embeddings] for ref in references])
    overlap = np.array([[iou(face.box, region) for face in faces] for region in regions])
    threshold = same_person_threshold(embedder)
    return [_match(i, similarity, overlap, faces, threshold) for i in range(len(regions))]


def same_person_threshold(embedder: FaceEmbedder) -> float:
    """Cosine above which two faces are taken for the same person by this embedder."""
    return SAME_PERSON_COSINE.get(embedder.name, 0.5)


def mean_face_sim(matches: list[FaceMatch]) -> float:
    """The paper's FaceSim of one image: the mean over identities (missing ones count as 0)."""
    return float(np.mean([match.similarity for match in matches])) if matches else 0.0


def _match(
    identity: int, similarity: np.ndarray, overlap: np.ndarray, faces: list[Face], threshold: float
) -> FaceMatch:
    if not faces:
        return FaceMatch(identity, 0.0, 0.0, None, "missing")
    row_overlap, row_similarity = overlap[identity], similarity[identity]
    best_overlap = int(np.argmax(row_overlap))
    if row_overlap[best_overlap] <= IOU_THRESHOLD:
        best_match = int(np.argmax(row_similarity))
        recognised = _is_recognised(identity, best_match, similarity) and row_similarity[best_match] >= threshold
        status = "misplaced" if recognised else "missing"
        return FaceMatch(identity, 0.0, float(row_overlap[best_overlap]), None, status)
    status = "duplicate" if _is_cloned(identity, best_overlap, similarity, threshold) else "ok"
    score, overlap_score = float(row_similarity[best_overlap]), float(row_overlap[best_overlap])
    return FaceMatch(identity, score, overlap_score, faces[best_overlap].box, status)


def _is_recognised(identity: int, face: int, similarity: np.ndarray) -> bool:
    """The face looks more like this identity than like any other reference."""
    return int(np.argmax(similarity[:, face])) == identity


def _is_cloned(identity: int, own_face: int, similarity: np.ndarray, threshold: float) -> bool:
    """Another face is recognised as this identity too, above the embedder's same-person threshold."""
    return any(
        face != own_face and _is_recognised(identity, face, similarity) and similarity[identity, face] >= threshold
        for face in range(similarity.shape[1])
    )
