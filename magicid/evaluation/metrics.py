"""What one generated image scores: per placed identity, FaceSim with the paper's IoU > 0.5 rule (by the judge),
whether the face is nearer its own reference than the others', how far its eyes and nose are from where the
skeleton asked, and aggregates over a table row. Every input (faces, judge embeddings) is computed once per image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from magicid.facesim import face_sim, same_person_threshold
from magicid.perception.analysis import ImageAnalysis
from magicid.perception.embedders import FaceEmbedder, identity_similarity
from magicid.perception.faces import Face


# OpenPose-18 nose, right eye, left eye; the 5 face points' nose, and eyes in image order (the person's right first)
SKELETON_FACE_JOINTS = {0: 2, 14: 0, 15: 1}


@dataclass
class PersonScore:
    """One placed identity in one generated image."""

    status: str  # facesim.FaceMatch status: ok | missing | misplaced | duplicate
    face_sim: float  # the judge's cosine to the own reference; 0 unless a face is at the box (IoU > 0.5)
    iou: float
    shuffled_sim: float | None  # the same face against another case's reference (None when missing)
    nearest_is_own: bool | None  # among the group's references, the own one is the nearest (groups only)
    pose_error: float | None  # mean eye/nose distance to the skeleton's, as a fraction of the face size


def score_image(analysis: ImageAnalysis, regions: list[np.ndarray], references: list[np.ndarray],
                shuffled: list[np.ndarray], skeletons: list[np.ndarray], judge: FaceEmbedder) -> list[PersonScore]:  # fmt: skip
    """Scores of the identities placed at `regions` (pixels) of the analysed image with judge `references`;
    `shuffled[i]` is a reference of someone else; `skeletons[i]` the (18, 3) pose asked for, in pixels."""
    matches = face_sim(analysis, regions, references, embedder=judge)
    scores = []
    for index, match in enumerate(matches):
        face = _face_with_box(analysis.faces, match.face_box)
        embedding = analysis.embedding(judge, face) if face is not None else None
        scores.append(PersonScore(
            status=match.status, face_sim=float(match.similarity), iou=float(match.iou),
            shuffled_sim=None if embedding is None else identity_similarity(embedding, shuffled[index]),
            nearest_is_own=None if embedding is None or len(references) < 2 else bool(
                np.argmax([identity_similarity(embedding, ref) for ref in references]) == index),
            pose_error=None if face is None else pose_error(face, skeletons[index]),
        ))  # fmt: skip
    return scores


def pose_error(face: Face, skeleton: np.ndarray) -> float | None:
    """Mean distance of the generated face's nose and eyes from the skeleton's, over the face size."""
    distances = [np.linalg.norm(face.kps5[point] - skeleton[joint, :2])
                 for joint, point in SKELETON_FACE_JOINTS.items() if skeleton[joint, 2] > 0]  # fmt: skip
    return float(np.mean(distances) / max(face.size, 1.0)) if distances else None


def _face_with_box(faces: list[Face], box) -> Face | None:
    if box is None:
        return None
    return next((face for face in faces if np.allclose(face.box, box)), None)


def aggregate(scores: list[PersonScore], seconds: list[float], judge: FaceEmbedder) -> dict:
    """A table row: the paper's FaceSim (mean, missing = 0), placement and identity shares, pose error, speed."""
    placed = [score for score in scores if score.status in ("ok", "duplicate")]
    compared = [score for score in placed if score.shuffled_sim is not None]
    grouped = [score for score in placed if score.nearest_is_own is not None]
    errors = [score.pose_error for score in placed if score.pose_error is not None]
    threshold = same_person_threshold(judge)
    count = max(len(scores), 1)
    return {
        "identities": len(scores),
        "face_sim": _mean([score.face_sim for score in scores]),
        "found_at_box": len(placed) / count,
        "missing": sum(score.status == "missing" for score in scores) / count,
        "misplaced": sum(score.status == "misplaced" for score in scores) / count,
        "duplicate": sum(score.status == "duplicate" for score in scores) / count,
        "own_beats_shuffled": _share([score.face_sim > score.shuffled_sim for score in compared]),
        "nearest_is_own": _share([score.nearest_is_own for score in grouped]),
        "recognised": _share([score.face_sim >= threshold for score in placed]),
        "pose_error": _mean(errors),
        "seconds_per_image": _mean(seconds),
    }


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _share(flags: list[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def as_dicts(scores: list[PersonScore]) -> list[dict]:
    return [asdict(score) for score in scores]
