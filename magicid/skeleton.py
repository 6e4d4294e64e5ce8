"""OpenPose-18 skeletons: the joints' names and indices, as the OpenPose ControlNets and MMF's skeleton condition use
them. Keypoints are `(18, 3)` arrays of (x, y, visible) with x, y in [0, 1] of the canvas."""

from __future__ import annotations

import numpy as np


JOINTS = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip", "r_knee",
    "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)  # fmt: skip
JOINT_INDEX = {name: index for index, name in enumerate(JOINTS)}
NOSE, NECK, R_SHOULDER, L_SHOULDER, R_EYE, L_EYE, R_EAR, L_EAR = 0, 1, 2, 5, 14, 15, 16, 17
LEFT_RIGHT_PAIRS = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17))
FACE_JOINTS = (NOSE, R_EYE, L_EYE, R_EAR, L_EAR)


def hide_outside(pose: np.ndarray) -> np.ndarray:
    """Mark the joints that fall outside the canvas as not visible (all zero), in place; returns `pose`."""
    outside = ((pose[:, :2] < 0) | (pose[:, :2] > 1)).any(axis=1)
    pose[outside] = 0.0
    return pose
