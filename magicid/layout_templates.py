"""The built-in layout templates (standing, sitting, half-body, full-body, portrait): OpenPose-18 poses of 1..6
people spread across the canvas, with adult proportions, slight head tilts and varied heights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from magicid.skeleton import JOINT_INDEX, hide_outside


MAX_TEMPLATE_PEOPLE = 6
# A body is drawn in "body units": x from the body's centre line (the person's right, on the image left, is
# negative), y from the top of the head to the ankles (1.0 = standing height). Adult proportions, facing the camera.

_HEAD = {"nose": (0.0, 0.075), "r_eye": (-0.019, 0.058), "l_eye": (0.019, 0.058),
         "r_ear": (-0.044, 0.066), "l_ear": (0.044, 0.066), "neck": (0.0, 0.17),
         "r_shoulder": (-0.105, 0.19), "l_shoulder": (0.105, 0.19)}  # fmt: skip
_ARMS = {  # (elbow, wrist) of the right arm; the left arm is the mirror image
    "relaxed": ((-0.13, 0.33), (-0.14, 0.46)),
    "clasped": ((-0.12, 0.34), (-0.035, 0.45)),
    "hip": ((-0.2, 0.34), (-0.085, 0.47)),
    "wave": ((-0.2, 0.21), (-0.22, 0.075)),
    "lap": ((-0.12, 0.36), (-0.08, 0.53)),
}
_LEGS = {  # (hip, knee, ankle) of the right leg
    "straight": ((-0.06, 0.51), (-0.065, 0.72), (-0.065, 0.93)),
    "apart": ((-0.06, 0.51), (-0.085, 0.72), (-0.105, 0.93)),
    "step": ((-0.06, 0.51), (-0.05, 0.72), (-0.03, 0.93)),
    "seated": ((-0.06, 0.51), (-0.11, 0.57), (-0.1, 0.8)),  # thighs towards the camera, shins down
}


@dataclass(frozen=True)
class _TemplateStyle:
    arms: tuple[tuple[str, str], ...]  # (right, left) arm per person, cycled
    legs: tuple[tuple[str, str], ...]
    body_extent: float  # lowest visible y in body units (ankles; hips when cut at the waist)
    fill: float  # body height as a fraction of the canvas height, when width allows
    slot_body_units: float  # horizontal room one person needs, in body units
    cut_at_waist: bool = False


_STYLES = {
    "standing": _TemplateStyle(
        arms=(("relaxed", "relaxed"), ("clasped", "clasped"), ("relaxed", "hip"), ("relaxed", "relaxed")),
        legs=(("straight", "straight"), ("straight", "step")),
        body_extent=0.93, fill=0.88, slot_body_units=0.34,
    ),
    "full-body": _TemplateStyle(
        arms=(("hip", "relaxed"), ("relaxed", "wave"), ("relaxed", "hip"), ("clasped", "clasped")),
        legs=(("apart", "apart"), ("step", "straight"), ("straight", "apart")),
        body_extent=0.93, fill=0.78, slot_body_units=0.4,
    ),
    "half-body": _TemplateStyle(
        arms=(("relaxed", "relaxed"), ("clasped", "clasped"), ("relaxed", "hip")),
        legs=(("straight", "straight"),),
        body_extent=0.51, fill=1.75, slot_body_units=0.25, cut_at_waist=True,
    ),
    "sitting": _TemplateStyle(
        arms=(("lap", "lap"), ("relaxed", "lap"), ("lap", "lap"), ("clasped", "clasped")),
        legs=(("seated", "seated"),),
        body_extent=0.8, fill=0.88, slot_body_units=0.34,
    ),
    "portrait": _TemplateStyle(  # head and shoulders, the face about half the canvas: MagicID-mini's framing
        arms=(("relaxed", "relaxed"),),
        legs=(("straight", "straight"),),
        body_extent=0.17, fill=4.75, slot_body_units=0.19, cut_at_waist=True,
    ),
}
TWO_ROWS_FROM = 4  # half-body groups this big stand in two rows
TWO_ROWS_MAX_BODY = 1.43  # front-row body height / canvas height: keeps the raised back row's heads inside
BACK_ROW_SCALE = 0.93  # a little further from the camera
BACK_ROW_RAISE = 0.14  # back-row heads sit this many body heights above the front row's
_HEIGHT_VARIATION = (1.0, 0.96, 1.03, 0.98, 1.02, 0.97)
_HEAD_TILT_DEGREES = (2.0, -3.0, 1.5, -2.0, 3.0, -1.5)
_HEAD_JOINTS = ("nose", "r_eye", "l_eye", "r_ear", "l_ear")


def template_poses(name: str, num_people: int, width: int, height: int) -> list[np.ndarray]:
    """Normalised `(18, 3)` poses of template `name`: `num_people` spread evenly left to right."""
    style = _STYLES[name]
    poses = []
    for index, spot in enumerate(_spots(style, num_people, width, height)):
        toward_middle = float(np.sign(width / 2 - spot.centre_x))
        points = _template_body(style, index, toward_middle, spot.back_row)
        scale = spot.body_height * _HEIGHT_VARIATION[index % len(_HEIGHT_VARIATION)]
        pose = np.zeros((18, 3), dtype=np.float64)
        for joint, (x, y) in points.items():  # feet (or waists) of a row share one line; heights vary above it
            pose_x, pose_y = spot.centre_x + x * scale, spot.bottom + (y - style.body_extent) * scale
            pose[JOINT_INDEX[joint]] = (pose_x / width, pose_y / height, 1.0)
        poses.append(hide_outside(pose))
    return poses


@dataclass(frozen=True)
class _Spot:
    centre_x: float
    bottom: float  # y (px) of the row's ground (or waist) line
    body_height: float  # px
    back_row: bool = False


def _spots(style: _TemplateStyle, num_people: int, width: int, height: int) -> list[_Spot]:
    margin = 0.04 * width
    slot = (width - 2 * margin) / num_people
    centres = [margin + slot * (index + 0.5) for index in range(num_people)]
    body_height = min(style.fill * height, slot / style.slot_body_units)
    if style.cut_at_waist and num_people >= TWO_ROWS_FROM:
        return _two_row_spots(style, centres, slot, height)
    if style.cut_at_waist:  # the waist sits just above the bottom edge
        bottom = 0.97 * height
    else:  # the group centred vertically
        bottom = max(0.05 * height, (height - style.body_extent * body_height) / 2) + style.body_extent * body_height
    return [_Spot(centre_x, bottom, body_height) for centre_x in centres]


def _two_row_spots(style: _TemplateStyle, centres: list[float], slot: float, height: int) -> list[_Spot]:
    """Half-body groups of 4+: alternate people stand in a back row, raised, so faces can be twice as big."""
    front_height = min(TWO_ROWS_MAX_BODY * height, 2 * slot / style.slot_body_units)
    front_bottom = 0.97 * height
    back_height = BACK_ROW_SCALE * front_height
    shrink = (1 - BACK_ROW_SCALE) * style.body_extent * front_height  # keeps the smaller back-row heads raised
    back_bottom = front_bottom - BACK_ROW_RAISE * front_height - shrink
    return [
        _Spot(x, back_bottom, back_height, True) if index % 2 else _Spot(x, front_bottom, front_height)
        for index, x in enumerate(centres)
    ]


def _template_body(
    style: _TemplateStyle, index: int, toward_middle: float, back_row: bool = False
) -> dict[str, tuple[float, float]]:
    right_arm, left_arm = style.arms[index % len(style.arms)]
    right_leg, left_leg = style.legs[index % len(style.legs)]
    points = dict(_HEAD)
    points["r_elbow"], points["r_wrist"] = _ARMS[right_arm]
    points["l_elbow"], points["l_wrist"] = _mirror_points(_ARMS[left_arm])
    points["r_hip"], points["r_knee"], points["r_ankle"] = _LEGS[right_leg]
    points["l_hip"], points["l_knee"], points["l_ankle"] = _mirror_points(_LEGS[left_leg])
    if style.cut_at_waist:
        for joint in ("r_knee", "r_ankle", "l_knee", "l_ankle"):
            del points[joint]
    if back_row:  # hidden behind the front row
        for joint in ("r_elbow", "r_wrist", "l_elbow", "l_wrist", "r_hip", "l_hip"):
            del points[joint]
    return _pose_head(points, _HEAD_TILT_DEGREES[index % len(_HEAD_TILT_DEGREES)], 0.01 * toward_middle)


def _mirror_points(points: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    return tuple((-x, y) for x, y in points)


def _pose_head(points: dict, tilt_degrees: float, turn: float) -> dict[str, tuple[float, float]]:
    """Tilt the head about the neck and turn it slightly towards the middle of the group (nose and eyes shift)."""
    angle = np.radians(tilt_degrees)
    neck_x, neck_y = points["neck"]
    result = dict(points)
    for joint in _HEAD_JOINTS:
        x, y = points[joint]
        x += turn if joint in ("nose", "r_eye", "l_eye") else 0.0
        dx, dy = x - neck_x, y - neck_y
        cos, sin = np.cos(angle), np.sin(angle)
        result[joint] = (neck_x + dx * cos - dy * sin, neck_y + dx * sin + dy * cos)
    return result


TEMPLATES = ("standing", "sitting", "half-body", "full-body", "portrait")  # the order the app and CLI offer them
