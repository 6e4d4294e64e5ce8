"""A layout from a photo: detected skeletons, with the detected faces (and their landmarks) joined to the skeletons
whose heads they are by a global assignment; a face without a skeleton gets head-and-shoulders keypoints."""

from __future__ import annotations

import numpy as np
from PIL import Image

from magicid.errors import LayoutError
from magicid.face_regions import face_box_from_keypoints, iou
from magicid.layout import Layout, Person, closest_size
from magicid.skeleton import L_EAR, L_EYE, L_SHOULDER, NECK, NOSE, R_EAR, R_EYE, R_SHOULDER, hide_outside


def layout_from_photo(cls: type[Layout], image, width: int | None, height: int | None) -> Layout:
    from magicid.imageio import load_image
    from magicid.perception.faces import detect_faces
    from magicid.perception.poses import detect_poses

    photo = image if isinstance(image, Image.Image) else load_image(image)
    faces = detect_faces(photo)
    poses = detect_poses(photo, faces=faces)
    if not faces and not poses:
        name = photo.info.get("source", "the photo")
        raise LayoutError(f"no people found in {name}: use a photo with visible people")
    people = attach_faces(poses, faces, photo.size, [_normalised_landmarks(photo, face) for face in faces])
    natural = cls(photo.width, photo.height, people)
    if width is None or height is None:
        width, height = closest_size(photo.width, photo.height)
    return natural.fit_to(width, height)


def _normalised_landmarks(photo: Image.Image, face) -> np.ndarray | None:
    """The face's dense landmarks in [0, 1] of the photo; None when they cannot be found (the layout still works)."""
    from magicid.perception.landmarks import face_landmarks

    try:
        points = face_landmarks(photo, face)
    except Exception:  # optional extra (missing model, odd crop): the skeleton alone still conditions the face
        return None
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0 or not np.isfinite(points).all():
        return None
    return points / np.array(photo.size, dtype=np.float64)


MIN_HEAD_MATCH_IOU = 0.2  # a face joins a skeleton only if it overlaps the head that skeleton implies this much


def attach_faces(
    poses: list[np.ndarray], faces: list, size: tuple[int, int], landmarks: list[np.ndarray | None] | None = None
) -> list[Person]:
    """Give each detected face (and its normalised landmarks, if given) to the skeleton whose head it sits on, by a
    global assignment (the best total fit, each skeleton at most one face); a face no skeleton explains well enough
    becomes a person of its own, with a head-and-shoulders skeleton."""
    from scipy.optimize import linear_sum_assignment

    width, height = size
    landmarks = landmarks or [None] * len(faces)
    people = [Person(pose) for pose in poses]
    heads = [face_box_from_keypoints(pose, width, height) for pose in poses]
    scores = np.array([[_head_match(face.box, head) if head is not None else 0.0 for head in heads] for face in faces])
    matched = {}
    if scores.size:
        matched = {f: p for f, p in zip(*linear_sum_assignment(-scores)) if scores[f, p] >= MIN_HEAD_MATCH_IOU}
    for index, (face, points) in enumerate(zip(faces, landmarks)):
        if index in matched:
            person = people[matched[index]]
            person.face_box, person.face_landmarks = face.box_norm(width, height), points
        else:
            pose = _head_pose_from_face(face, width, height)
            people.append(Person(pose, face_box=face.box_norm(width, height), face_landmarks=points))
    return people


def _head_match(face_box: np.ndarray, head_box: np.ndarray) -> float:
    """How well a detected face fits a skeleton's estimated head: their IoU, or 0 unless the face centre is inside
    that head box."""
    centre = (face_box[:2] + face_box[2:]) / 2
    grown = head_box + np.array([-1, -1, 1, 1]) * 0.25 * (head_box[2] - head_box[0])
    if not (grown[0] <= centre[0] <= grown[2] and grown[1] <= centre[1] <= grown[3]):
        return 0.0
    return iou(face_box, head_box)


def _head_pose_from_face(face, width: int, height: int) -> np.ndarray:
    """Head and shoulders keypoints for a face no skeleton was found for (from its 5 points and box)."""
    eye_image_left, eye_image_right, nose = face.kps5[0], face.kps5[1], face.kps5[2]
    face_width = face.box[2] - face.box[0]
    neck = np.array([nose[0], face.box[3] + 0.45 * face_width])
    points = {
        NOSE: nose, R_EYE: eye_image_left, L_EYE: eye_image_right,
        R_EAR: np.array([face.box[0], eye_image_left[1]]), L_EAR: np.array([face.box[2], eye_image_right[1]]),
        NECK: neck, R_SHOULDER: neck + (-1.2 * face_width, 0.2 * face_width),
        L_SHOULDER: neck + (1.2 * face_width, 0.2 * face_width),
    }  # fmt: skip
    pose = np.zeros((18, 3), dtype=np.float64)
    for joint, (x, y) in points.items():
        pose[joint] = (x / width, y / height, 1.0)
    return hide_outside(pose)
