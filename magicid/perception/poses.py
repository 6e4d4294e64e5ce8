"""Multi-person OpenPose-18 body keypoints.

controlnet_aux's OpenposeDetector when its weights are on disk; offline, mediapipe BlazePose (single person)
run on person crops: one body-sized crop around each face that no skeleton explains yet (largest face first),
narrowed to end halfway to the neighbouring faces and with those faces greyed out, so that each crop holds one
person; then the whole image with the persons found so far greyed out, until nothing new appears (this finds
people whose faces are hidden). The 33 BlazePose points are mapped to OpenPose-18, and anatomically impossible
skeletons (head and torso pointing different ways) are dropped.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from magicid.perception import models
from magicid.perception.faces import Face, detect_faces


logger = logging.getLogger(__name__)

# OpenPose-18 index -> BlazePose-33 index (neck, 1, is the mid-shoulder point)
BLAZE_FOR_OPENPOSE = {
    0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 8: 24, 9: 26, 10: 28,
    11: 23, 12: 25, 13: 27, 14: 5, 15: 2, 16: 8, 17: 7,
}  # fmt: skip
NECK, R_SHOULDER, L_SHOULDER, R_HIP, L_HIP = 1, 2, 5, 8, 11
MIN_JOINT_CONFIDENCE = 0.3  # BlazePose visibility below this is reported as missing (confidence 0)
MAX_PERSONS = 8
SAME_PERSON_IOU = 0.4


def detect_poses(image: Image.Image, faces: list[Face] | None = None) -> list[np.ndarray]:
    """Persons as (18, 3) `(x_norm, y_norm, conf)` OpenPose-18 arrays, sorted left to right."""
    openpose = _openpose_detector()
    if openpose is not None:
        persons = _openpose_persons(openpose, image)
    else:
        persons = _blazepose_persons(image, detect_faces(image) if faces is None else faces)
    return sorted(persons, key=_center_x)


def _blazepose_persons(image: Image.Image, faces: list[Face]) -> list[np.ndarray]:
    image = image.convert("RGB")
    persons: list[np.ndarray] = []
    for face in faces[:MAX_PERSONS]:
        if not any(_explains_face(person, face, image.size) for person in persons):
            others = [other for other in faces if other is not face]
            region = body_region(face, image.size, others)
            _add_if_new(persons, _pose_in_region(_grey_faces(image, others), region))
    while len(persons) < MAX_PERSONS:  # greying out found persons lets the single-person model see the next one
        found = _pose_in_region(_grey_out(image, persons), (0, 0, image.width, image.height))
        if not _add_if_new(persons, found):
            break
    return persons


def body_region(face: Face, size: tuple[int, int], others: list[Face] = ()) -> tuple[int, int, int, int]:
    """Where the body of a person with this face probably is: 3 face widths each side, 8 below (clipped), but
    ending halfway to any other face at the height of this body, so that the crop holds one person."""
    (cx, cy), side = face.center, face.size
    x0, y0 = max(0, cx - 3 * side), max(0, cy - 2 * side)
    x1, y1 = min(size[0], cx + 3 * side), min(size[1], cy + 8 * side)
    for other in others:
        ox, oy = other.center
        if not y0 <= oy <= y1:
            continue
        if ox < cx:
            x0 = max(x0, (ox + cx) / 2)
        elif ox > cx:
            x1 = min(x1, (ox + cx) / 2)
    return int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))


def _grey_faces(image: Image.Image, faces: list[Face]) -> Image.Image:
    """`image` with these faces covered, so that a crop's single-person model does not lock on them."""
    if not faces:
        return image
    greyed = image.copy()
    draw = ImageDraw.Draw(greyed)
    for face in faces:
        draw.rectangle(tuple(face.box), fill=(127, 127, 127))
    return greyed


def is_plausible(pose: np.ndarray) -> bool:
    """The head and the torso point the same way (y grows downwards): a nose below the neck needs hips above the
    shoulders (a handstand), and with the hips unseen it is rejected. A chimera of two people, or a head mapped
    upside down onto a body, fails."""
    visible = pose[:, 2] > 0
    if not (visible[0] and visible[NECK]):
        return True
    head_down = pose[0, 1] > pose[NECK, 1]
    shoulders = [pose[joint, 1] for joint in (R_SHOULDER, L_SHOULDER) if visible[joint]]
    hips = [pose[joint, 1] for joint in (R_HIP, L_HIP) if visible[joint]]
    if not (shoulders and hips):
        return not head_down
    return head_down == (np.mean(hips) < np.mean(shoulders))


def _pose_in_region(image: Image.Image, region: tuple[int, int, int, int]) -> np.ndarray | None:
    x0, y0, x1, y1 = region
    side = max(x1 - x0, y1 - y0)  # BlazePose projects its points right on square inputs only: pad right and below
    square = Image.new("RGB", (side, side))
    square.paste(image.crop(region).convert("RGB"), (0, 0))
    result = models.run_mediapipe(models.blaze_pose(), np.asarray(square))
    if result.pose_landmarks is None:
        return None
    blaze = np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark], dtype=np.float64)
    blaze[:, 0] = (blaze[:, 0] * side + x0) / image.width
    blaze[:, 1] = (blaze[:, 1] * side + y0) / image.height
    return openpose_from_blazepose(blaze)


def openpose_from_blazepose(blaze: np.ndarray) -> np.ndarray:
    """Map (33, 3) BlazePose `(x_norm, y_norm, visibility)` to (18, 3) OpenPose-18; off-image joints get 0."""
    pose = np.zeros((18, 3), dtype=np.float64)
    for openpose_index, blaze_index in BLAZE_FOR_OPENPOSE.items():
        pose[openpose_index] = blaze[blaze_index]
    pose[NECK, :2] = (pose[R_SHOULDER, :2] + pose[L_SHOULDER, :2]) / 2
    pose[NECK, 2] = min(pose[R_SHOULDER, 2], pose[L_SHOULDER, 2])
    inside = np.all((pose[:, :2] >= 0) & (pose[:, :2] <= 1), axis=1)
    pose[~inside | (pose[:, 2] < MIN_JOINT_CONFIDENCE)] = 0.0
    return pose


def pose_box(pose: np.ndarray) -> np.ndarray | None:
    """(x0, y0, x1, y1) in normalised coordinates around the visible joints, or None if none is visible."""
    visible = pose[pose[:, 2] > 0, :2]
    if len(visible) == 0:
        return None
    return np.concatenate([visible.min(axis=0), visible.max(axis=0)])


def _add_if_new(persons: list[np.ndarray], pose: np.ndarray | None) -> bool:
    box = None if pose is None else pose_box(pose)
    if box is None or pose[NECK, 2] == 0:  # a skeleton without shoulders is not a usable person
        return False
    if not is_plausible(pose):
        logger.info("dropped an anatomically impossible skeleton (its head and torso point different ways)")
        return False
    from magicid.face_regions import iou

    if any(iou(box, pose_box(other)) > SAME_PERSON_IOU for other in persons):
        return False
    persons.append(pose)
    return True


def _explains_face(pose: np.ndarray, face: Face, size: tuple[int, int]) -> bool:
    nose = pose[0]
    if nose[2] == 0:
        return False
    x, y = nose[0] * size[0], nose[1] * size[1]
    x0, y0, x1, y1 = face.box
    return x0 <= x <= x1 and y0 <= y <= y1


def _grey_out(image: Image.Image, persons: list[np.ndarray]) -> np.ndarray:
    greyed = image.copy()
    draw = ImageDraw.Draw(greyed)
    for pose in persons:
        x0, y0, x1, y1 = pose_box(pose) * np.tile(image.size, 2)
        margin = 0.15 * max(x1 - x0, y1 - y0)
        draw.rectangle((x0 - margin, y0 - 2 * margin, x1 + margin, y1 + margin), fill=(127, 127, 127))
    return greyed


def _center_x(pose: np.ndarray) -> float:
    box = pose_box(pose)
    return float((box[0] + box[2]) / 2) if box is not None else 0.0


ANNOTATOR_FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")


def openpose_annotator_dir() -> Path | None:
    """controlnet_aux's OpenPose weights folder: env MAGICID_ANNOTATORS, else lllyasviel/Annotators in the HF cache."""
    folder = os.environ.get("MAGICID_ANNOTATORS")
    if folder:
        return Path(folder) if all((Path(folder) / name).is_file() for name in ANNOTATOR_FILES) else None
    from huggingface_hub import try_to_load_from_cache

    cached = [try_to_load_from_cache("lllyasviel/Annotators", name) for name in ANNOTATOR_FILES]
    if all(isinstance(path, str) for path in cached):
        return Path(cached[0]).parent
    return None


@lru_cache(maxsize=1)
def _openpose_detector():
    folder = openpose_annotator_dir()
    if folder is None:
        return None
    from controlnet_aux import OpenposeDetector

    logger.info("Using controlnet_aux OpenPose weights from %s", folder)
    return OpenposeDetector.from_pretrained(str(folder), local_files_only=True)


def _openpose_persons(detector, image: Image.Image) -> list[np.ndarray]:
    persons = []
    for result in detector.detect_poses(np.asarray(image.convert("RGB"))):
        pose = np.zeros((18, 3), dtype=np.float64)
        for index, keypoint in enumerate(result.body.keypoints[:18]):
            if keypoint is not None:
                pose[index] = (keypoint.x, keypoint.y, max(float(keypoint.score), 1e-3))
        persons.append(pose)
    return persons
