"""Layout of people on the canvas: OpenPose-18 skeletons, who shows which identity, face-region masks `M_id^i`.

A `Layout` drives group generation: `render_condition()` is the ControlNet condition (the skeleton, plus the face
landmarks of people that have them, combined as in MMF training) and `identity_masks(N)` gives
the face-region masks of Mask Guided Multi-ID Cross Attention (Alg. 1), at canvas size (the attention processor
downsamples them to each layer's token grid). Edits never change a layout in place: each returns a new one.
Templates live in `layout_templates`, face boxes and masks in `face_regions`, layouts made from a photo in
`layout_from_photo`.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from magicid.config import Limits
from magicid.errors import LayoutError
from magicid.face_regions import face_box_from_keypoints, iou, soft_ellipse_mask, visible_fraction
from magicid.layout_templates import MAX_TEMPLATE_PEOPLE, TEMPLATES, template_poses
from magicid.skeleton import (  # noqa: F401  (re-exported: the names of the OpenPose-18 joints)
    FACE_JOINTS,
    JOINT_INDEX,
    JOINTS,
    L_EAR,
    L_EYE,
    L_SHOULDER,
    LEFT_RIGHT_PAIRS,
    NECK,
    NOSE,
    R_EAR,
    R_EYE,
    R_SHOULDER,
    hide_outside,
)


FORMAT_VERSION = 1
# What a layout may hold, whatever made it (a file, a client request, an edit): bounds that keep one request's
# memory and time small. Coordinates are canvas fractions; a little outside [0, 1] is a person cut off at the edge.
MIN_CANVAS_SIDE = 64
MAX_CANVAS_SIDE = 4096  # layouts are fitted to photos (reports, fixes) as well as to output sizes
MAX_PEOPLE = 24
MAX_IDENTITIES = Limits().max_identities
MAX_FACE_LANDMARKS = 500  # FaceMesh with irises has 478
COORDINATE_RANGE = 10.0
MAX_LAYOUT_BYTES = 2 * 1024 * 1024
OVERLAP_IOU_WARNING = 0.3
MAKE_ONE = "make one with `python -m magicid layout`"


@dataclass
class Person:
    """One person: OpenPose-18 keypoints `(18, 3)` normalised `(x, y, confidence)`; confidence 0 = missing.

    `identity` is the index of the identity this person shows (None: none, or the default assignment).
    `face_box` `(x0, y0, x1, y1)` normalised, when known (e.g. detected), overrides the keypoint estimate.
    `face_landmarks` `(K, 2)` normalised dense face landmarks (FaceMesh 478 or dlib 68), when known (from a photo).
    """

    keypoints: np.ndarray
    identity: int | None = None
    face_box: np.ndarray | None = None
    face_landmarks: np.ndarray | None = None

    def __post_init__(self) -> None:
        keypoints = _points(self.keypoints, "keypoints")
        if keypoints.shape != (18, 3):
            raise LayoutError(f"a person needs 18 OpenPose keypoints (x, y, confidence), got shape {keypoints.shape}")
        self.keypoints = keypoints
        if self.face_box is not None:
            box = _points(self.face_box, "face_box")
            if box.shape != (4,) or box[2] <= box[0] or box[3] <= box[1]:
                raise LayoutError("a face box must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1")
            self.face_box = box
        if self.face_landmarks is not None:
            points = _points(self.face_landmarks, "face_landmarks")
            if points.ndim != 2 or points.shape[1] != 2 or not 0 < len(points) <= MAX_FACE_LANDMARKS:
                raise LayoutError(f"face landmarks must be 1 to {MAX_FACE_LANDMARKS} (x, y) points")
            self.face_landmarks = points
        if self.identity is not None:
            self.identity = _integer(self.identity, "identity")
            if not 0 <= self.identity < MAX_IDENTITIES:
                raise LayoutError(f"identity numbers go from 0 (the first identity) to {MAX_IDENTITIES - 1}")

    def visible(self, joint: int) -> bool:
        return bool(self.keypoints[joint, 2] > 0)

    def has_head(self) -> bool:
        return self.face_box is not None or any(self.visible(joint) for joint in FACE_JOINTS)

    def to_dict(self) -> dict:
        return {
            "keypoints": np.round(self.keypoints, 6).tolist(),
            "identity": self.identity,
            "face_box": None if self.face_box is None else np.round(self.face_box, 6).tolist(),
            "face_landmarks": None if self.face_landmarks is None else np.round(self.face_landmarks, 4).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Person:
        if not isinstance(data, dict) or "keypoints" not in data:
            raise LayoutError("each entry of `people` needs `keypoints` (18 x [x, y, confidence])")
        return cls(
            data["keypoints"],
            data.get("identity"),
            data.get("face_box"),
            data.get("face_landmarks"),  # absent in layouts saved before landmarks existed
        )

    def map_points(self, transform) -> None:
        """Move every point of this person (in place): `transform` maps `(N, 2)` normalised points to new ones.

        Keypoints (hidden ones too), the face box (its corners, re-sorted) and the face landmarks move together.
        """
        self.keypoints[:, :2] = transform(self.keypoints[:, :2])
        if self.face_box is not None:
            corners = transform(self.face_box.reshape(2, 2))
            self.face_box = np.concatenate([corners.min(axis=0), corners.max(axis=0)])
        if self.face_landmarks is not None:
            self.face_landmarks = transform(self.face_landmarks)


@dataclass
class Layout:
    """The canvas (`width` x `height` px) and the people on it, each with keypoints normalised to the canvas."""

    width: int
    height: int
    people: list[Person] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.width, self.height = _integer(self.width, "width"), _integer(self.height, "height")
        if not (MIN_CANVAS_SIDE <= self.width <= MAX_CANVAS_SIDE and MIN_CANVAS_SIDE <= self.height <= MAX_CANVAS_SIDE):
            raise LayoutError(
                f"canvas {self.width}x{self.height} is not supported: "
                f"use {MIN_CANVAS_SIDE} to {MAX_CANVAS_SIDE} pixels on each side"
            )
        if not isinstance(self.people, (list, tuple)) or len(self.people) > MAX_PEOPLE:
            raise LayoutError(f"`people` must be a list of at most {MAX_PEOPLE} people")
        self.people = [person if isinstance(person, Person) else Person.from_dict(person) for person in self.people]

    # ---- serialisation -------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "version": FORMAT_VERSION,
            "width": self.width,
            "height": self.height,
            "people": [person.to_dict() for person in self.people],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Layout:
        """The one place a layout from outside is checked: anything but a valid layout raises `LayoutError`.

        Messages never quote the input, so a hostile value cannot come back to its sender.
        """
        if not isinstance(data, dict) or not {"width", "height", "people"} <= data.keys():
            raise LayoutError(f"a layout needs `width`, `height` and `people`; {MAKE_ONE}")
        people = data["people"]
        if not isinstance(people, list) or len(people) > MAX_PEOPLE:
            raise LayoutError(f"`people` must be a list of at most {MAX_PEOPLE} people")
        return cls(data["width"], data["height"], [Person.from_dict(person) for person in people])

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The layout as JSON text; also written to `path` when given."""
        text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", _one_line, json.dumps(self.to_dict(), indent=1))
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, text: str | bytes) -> Layout:
        """Parse layout JSON text (never a path: read files with `Layout.read`)."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as error:
                raise LayoutError(f"the layout is not UTF-8 text; {MAKE_ONE}") from error
        if not isinstance(text, str) or len(text) > MAX_LAYOUT_BYTES:
            raise LayoutError(f"a layout is JSON text of at most {MAX_LAYOUT_BYTES // 2**20} MB; {MAKE_ONE}")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as error:  # JSONDecodeError, or an integer too long to convert
            raise LayoutError(f"the layout is not valid JSON; {MAKE_ONE}") from error
        try:
            return cls.from_dict(data)
        except RecursionError as error:
            raise LayoutError(f"the layout is nested too deeply; {MAKE_ONE}") from error

    @classmethod
    def read(cls, path: str | os.PathLike) -> Layout:
        """A layout JSON file, read only when it is a regular file of at most `MAX_LAYOUT_BYTES`."""
        path = Path(path)
        if not path.is_file():
            raise LayoutError(f"layout file {path.name} not found: {MAKE_ONE}")
        if path.stat().st_size > MAX_LAYOUT_BYTES:
            raise LayoutError(f"layout file {path.name} is over {MAX_LAYOUT_BYTES // 2**20} MB: {MAKE_ONE}")
        return cls.from_json(path.read_bytes())

    # ---- construction --------------------------------------------------------------------------------------

    @classmethod
    def from_template(cls, name: str, num_people: int, width: int = 512, height: int = 512) -> Layout:
        """A built-in arrangement of `num_people` (1..6) people spread evenly left to right."""
        if name not in TEMPLATES:
            raise LayoutError(f"unknown layout template {name!r}: choose one of {', '.join(TEMPLATES)}")
        if not 1 <= num_people <= MAX_TEMPLATE_PEOPLE:
            raise LayoutError(f"templates hold 1 to {MAX_TEMPLATE_PEOPLE} people, not {num_people}")
        poses = template_poses(name, num_people, width, height)
        return cls.from_poses(poses, width, height)

    @classmethod
    def from_poses(cls, poses: list[np.ndarray], width: int, height: int) -> Layout:
        """One person per `(18, 3)` normalised pose, in the given order."""
        return cls(width, height, [Person(np.array(pose, dtype=np.float64)) for pose in poses])

    @classmethod
    def from_photo(cls, image, width: int | None = None, height: int | None = None) -> Layout:
        """People posed as in a photo: detected skeletons, with detected face boxes and landmarks on their heads.

        The photo is fitted into the canvas (default: the closest standard size to its aspect ratio) without
        distortion. A face without a detected skeleton still becomes a person (head and shoulders).
        """
        from magicid.layout_from_photo import layout_from_photo

        return layout_from_photo(cls, image, width, height)

    # ---- identities ----------------------------------------------------------------------------------------

    def assign_identities(self, num_identities: int, order: list[int] | None = None) -> Layout:
        """Identity i goes to person `order[i]`; default: people with a head, left to right. Others get none."""
        order = self.left_to_right() if order is None else list(order)
        if len(order) < num_identities:
            raise LayoutError(
                f"{num_identities} identities but only {len(order)} people to show them: add people to the layout"
            )
        for person_index in order[:num_identities]:
            self._check_person_index(person_index)
        if len(set(order[:num_identities])) < num_identities:
            raise LayoutError(f"each identity needs its own person; got the assignment {order[:num_identities]}")
        result = self._copy()
        for person in result.people:
            person.identity = None
        for identity, person_index in enumerate(order[:num_identities]):
            result.people[person_index].identity = identity
        return result

    def with_identities(self, num_identities: int, template: str = "standing") -> Layout:
        """Exactly identities 0..n-1 shown, each edit kept: the figures of identities >= n go, identities without
        a figure take the unassigned figures with a head (left to right), then new figures from `template`,
        each where the template's n-person scene has a place farthest from everyone already there."""
        result = self._copy()
        result.people = [p for p in result.people if p.identity is None or p.identity < num_identities]
        missing = [i for i in range(num_identities) if all(p.identity != i for p in result.people)]
        free = [i for i in result.left_to_right() if result.people[i].identity is None]
        for identity, person_index in zip(missing, free):
            result.people[person_index].identity = identity
        slots = Layout.from_template(template, max(num_identities, 1), self.width, self.height).people
        for identity in missing[len(free) :]:
            figure = copy.deepcopy(max(slots, key=lambda slot: result._distance_to_heads(slot)))
            figure.identity = identity
            result.people.append(figure)
        return result

    def _distance_to_heads(self, candidate: Person) -> float:
        """Horizontal distance (canvas fractions) from `candidate`'s nose to the nearest head already placed."""
        heads = [box for box in self.face_boxes() if box is not None]
        if not heads:
            return 1.0
        x = candidate.keypoints[0, 0] * self.width
        return float(min(abs(x - (box[0] + box[2]) / 2) for box in heads) / self.width)

    def left_to_right(self) -> list[int]:
        """Indices of the people with a head, sorted by the head's horizontal centre."""
        with_head = [index for index, person in enumerate(self.people) if person.has_head()]
        return sorted(with_head, key=lambda index: self._head_centre_x(index))

    def people_of_identity(self, identity: int, num_identities: int) -> list[int]:
        """Indices of the people showing `identity` under the effective assignment (explicit, else default)."""
        assignment = self._effective_assignment(num_identities)
        return [index for index, assigned in enumerate(assignment) if assigned == identity]

    def _effective_assignment(self, num_identities: int) -> list[int | None]:
        if any(person.identity is not None for person in self.people):
            return [person.identity for person in self.people]
        assignment: list[int | None] = [None] * len(self.people)
        for identity, person_index in enumerate(self.left_to_right()[:num_identities]):
            assignment[person_index] = identity
        return assignment

    # ---- geometry ------------------------------------------------------------------------------------------

    def face_box(self, person_index: int) -> np.ndarray | None:
        """The face box of one person in canvas pixels `(x0, y0, x1, y1)`; None without head and neck joints."""
        person = self.people[person_index]
        if person.face_box is not None:
            return person.face_box * np.array([self.width, self.height, self.width, self.height], dtype=np.float64)
        return face_box_from_keypoints(person.keypoints, self.width, self.height)

    def face_boxes(self) -> list[np.ndarray | None]:
        """Per person, its face box in canvas pixels (None only for a person without head and neck joints)."""
        return [self.face_box(index) for index in range(len(self.people))]

    def identity_boxes(self, num_identities: int) -> list[np.ndarray]:
        """Per identity, the face box (px) of the (first, leftmost) person showing it."""
        self._check_identities_placed(num_identities)
        boxes = []
        for identity in range(num_identities):
            people = sorted(self.people_of_identity(identity, num_identities), key=self._head_centre_x)
            boxes.append(self.face_box(people[0]))
        return boxes

    def identity_masks(self, num_identities: int) -> np.ndarray:
        """`M_id^i`: `(N, height, width)` float32 soft face-region masks, one per identity (union over its people)."""
        self._check_identities_placed(num_identities)
        masks = np.zeros((num_identities, self.height, self.width), dtype=np.float32)
        for person_index, identity in enumerate(self._effective_assignment(num_identities)):
            if identity is None or not 0 <= identity < num_identities:
                continue
            box = self.face_box(person_index)
            if box is None:  # a person without head or neck joints; validate() refuses to give it an identity
                continue
            masks[identity] = np.maximum(masks[identity], soft_ellipse_mask(box, self.width, self.height))
        return masks

    def poses(self) -> list[np.ndarray]:
        return [person.keypoints.copy() for person in self.people]

    def render_skeleton(self) -> Image.Image:
        """The OpenPose condition image (black background, coloured limbs) at canvas size."""
        return draw_skeleton(self.poses(), self.width, self.height)

    def has_face_landmarks(self) -> bool:
        return any(person.face_landmarks is not None for person in self.people)

    def render_face_landmarks(self) -> Image.Image:
        """The face-landmark condition image (black, mesh contours) of the people that have landmarks."""
        from magicid.perception.landmarks import draw_face_landmarks

        size = np.array([self.width, self.height], dtype=np.float64)
        points = [person.face_landmarks * size for person in self.people if person.face_landmarks is not None]
        return draw_face_landmarks(points, self.width, self.height)

    def render_condition(self, face_landmarks: bool = True) -> Image.Image:
        """The ControlNet condition: the skeleton, and (`face_landmarks`) the face landmarks where known, drawn
        together as in MMF training (per-pixel maximum of the two renderings). Without landmarks, exactly
        `render_skeleton()`."""
        skeleton = self.render_skeleton()
        if not (face_landmarks and self.has_face_landmarks()):
            return skeleton
        landmarks = np.asarray(self.render_face_landmarks().convert("RGB"))
        return Image.fromarray(np.maximum(np.asarray(skeleton.convert("RGB")), landmarks))

    # ---- validation ----------------------------------------------------------------------------------------

    def validate(self, num_identities: int) -> list[str]:
        """Warnings for a usable layout; raise `LayoutError` (one line) for one that cannot be generated."""
        if num_identities > 0 and not self.people:
            raise LayoutError("the layout has no people: add one person per identity, or pick a template")
        self._check_identities_placed(num_identities)
        assignment = self._effective_assignment(num_identities)
        warnings = []
        for index, person in enumerate(self.people):
            warnings += self._check_person(index, person, assignment[index], num_identities)
        warnings += self._overlap_warnings()
        unassigned = sum(1 for identity in assignment if identity is None or identity >= num_identities)
        if num_identities and unassigned:
            warnings.append(f"{people_count(len(self.people))} but {num_identities} identities: {unassigned} get no identity")
        return warnings

    def _check_person(self, index: int, person: Person, identity: int | None, num_identities: int) -> list[str]:
        """Warnings about one person; `LayoutError` if it cannot show its identity."""
        label = f"person {index + 1}"
        shows_identity = identity is not None and identity < num_identities
        warnings = []
        if identity is not None and identity >= num_identities:
            warnings.append(f"{label} is assigned identity {identity + 1} but only {num_identities} were given")
        if shows_identity and not person.has_head():
            raise LayoutError(f"{label} shows identity {identity + 1} but has no head keypoints: add nose and eyes")
        box = self.face_box(index)
        if box is not None and visible_fraction(box, self.width, self.height) < 0.5:
            if shows_identity:
                raise LayoutError(f"{label}'s head is outside the canvas: move it inside before generating")
            warnings.append(f"{label}'s head is outside the canvas")
        confident = person.keypoints[person.keypoints[:, 2] > 0, :2]
        outside = int(((confident < 0) | (confident > 1)).any(axis=1).sum())
        if outside:
            warnings.append(f"{label}: {outside} joint(s) outside the canvas are cut off at the edge")
        return warnings

    def _overlap_warnings(self) -> list[str]:
        boxes = self.face_boxes()
        warnings = []
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                if boxes[a] is not None and boxes[b] is not None and iou(boxes[a], boxes[b]) > OVERLAP_IOU_WARNING:
                    warnings.append(f"the faces of person {a + 1} and person {b + 1} overlap: identities may blend")
        return warnings

    def _check_identities_placed(self, num_identities: int) -> None:
        assignment = self._effective_assignment(num_identities)
        for identity in range(num_identities):
            if identity not in assignment:
                raise LayoutError(
                    f"identity {identity + 1} has no person in the layout ({people_count(len(self.people))}): "
                    "add a person or assign the identity to one"
                )

    def _check_person_index(self, index: int) -> None:
        if not 0 <= index < len(self.people):
            raise LayoutError(f"there is no person {index + 1}: the layout has {people_count(len(self.people))}")

    def _head_centre_x(self, index: int) -> float:
        box = self.face_box(index)
        return float((box[0] + box[2]) / 2) if box is not None else float(np.mean(self.people[index].keypoints[:, 0]))

    # ---- edits (each returns a new Layout) -----------------------------------------------------------------

    def _copy(self) -> Layout:
        return copy.deepcopy(self)

    def _edit(self, person_index: int) -> tuple[Layout, Person]:
        self._check_person_index(person_index)
        result = self._copy()
        return result, result.people[person_index]

    def move(self, person: int, dx: float, dy: float) -> Layout:
        """Shift one person by `(dx, dy)` in canvas fractions (0.1 = a tenth of the width/height)."""
        result, target = self._edit(person)
        target.map_points(lambda points: points + (dx, dy))
        return result

    def scale(self, person: int, factor: float, around: str = "head") -> Layout:
        """Resize one person by `factor` about its head centre (`around="head"`) or its body centre (`"centre"`)."""
        if factor <= 0:
            raise LayoutError(f"scale factor must be positive, got {factor}")
        if around not in ("head", "centre", "center"):
            raise LayoutError(f"scale around 'head' or 'centre', not {around!r}")
        pivot = self._pivot(person, around)
        result, target = self._edit(person)
        target.map_points(lambda points: pivot + (points - pivot) * factor)
        return result

    def mirror(self, person: int) -> Layout:
        """Flip one person horizontally about its body centre; left and right joints swap names.

        Face landmarks flip their x but keep their indices, so their left/right colours are not swapped.
        """
        pivot_x = self._pivot(person, "centre")[0]
        result, target = self._edit(person)
        target.map_points(lambda points: points * (-1.0, 1.0) + (2 * pivot_x, 0.0))
        for right, left in LEFT_RIGHT_PAIRS:
            target.keypoints[[right, left]] = target.keypoints[[left, right]]
        return result

    def set_joint(self, person: int, joint: int | str, x: float, y: float, confidence: float = 1.0) -> Layout:
        """Place one joint (index or name such as `"l_wrist"`) at normalised `(x, y)`; confidence 0 hides it.

        Moving a head joint (nose, eyes, ears) drops the person's face landmarks: they no longer match the head.
        """
        joint_index = JOINT_INDEX.get(joint) if isinstance(joint, str) else int(joint)
        if joint_index is None or not 0 <= joint_index < len(JOINTS):
            raise LayoutError(f"unknown joint {joint!r}: use 0..17 or one of {', '.join(JOINTS)}")
        result, target = self._edit(person)
        target.keypoints[joint_index] = (x, y, confidence)
        if joint_index in FACE_JOINTS:
            target.face_landmarks = None
        return result

    def set_identity(self, person: int, identity: int | None) -> Layout:
        """Make one person show `identity` (None: no identity); whoever showed it before takes this person's old one.

        Swapping keeps every identity placed; to show one identity twice, set `Person.identity` directly.
        """
        result, target = self._edit(person)
        if identity is not None:
            for other in result.people:
                if other is not target and other.identity == identity:
                    other.identity = target.identity
        target.identity = identity
        return result

    def add_person(self, person: Person | None = None) -> Layout:
        """Append a person (default: a standing person in the middle of the canvas)."""
        if person is None:
            person = Layout.from_template("standing", 1, self.width, self.height).people[0]
        result = self._copy()
        result.people.append(copy.deepcopy(person))
        return result

    def remove_person(self, person: int) -> Layout:
        self._check_person_index(person)
        result = self._copy()
        del result.people[person]
        return result

    def fit_to(self, width: int, height: int) -> Layout:
        """The same scene on a `width` x `height` canvas, scaled uniformly and centred (no distortion)."""
        scale = min(width / self.width, height / self.height)
        offset = np.array([(width - self.width * scale) / 2, (height - self.height * scale) / 2])
        old_size, new_size = np.array([self.width, self.height]), np.array([width, height])
        result = Layout(width, height, copy.deepcopy(self.people))
        for person in result.people:
            person.map_points(lambda points: (points * old_size * scale + offset) / new_size)
        return result

    def _pivot(self, person_index: int, around: str) -> np.ndarray:
        self._check_person_index(person_index)
        person = self.people[person_index]
        if around == "head" and person.has_head():
            box = self.face_box(person_index)
            return np.array([(box[0] + box[2]) / 2 / self.width, (box[1] + box[3]) / 2 / self.height])
        visible = person.keypoints[person.keypoints[:, 2] > 0, :2]
        if len(visible) == 0:
            return person.keypoints[:, :2].mean(axis=0)
        return (visible.min(axis=0) + visible.max(axis=0)) / 2


# ---- helpers -----------------------------------------------------------------------------------------------


def people_count(count: int) -> str:
    """"1 person", "3 people"."""
    return "1 person" if count == 1 else f"{count} people"


def _points(values, what: str) -> np.ndarray:
    """`values` as a float array of finite numbers within `COORDINATE_RANGE`, or a `LayoutError` naming `what`."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as error:
        raise LayoutError(f"`{what}` must be a list of numbers") from error
    if not np.isfinite(array).all() or (np.abs(array) > COORDINATE_RANGE).any():
        raise LayoutError(f"`{what}` must hold finite numbers between -{COORDINATE_RANGE:g} and {COORDINATE_RANGE:g}")
    return array


def _integer(value, what: str) -> int:
    """A whole number (an int, or a float with no fraction), or a `LayoutError` naming `what`."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and value == int(value):
        return int(value)
    raise LayoutError(f"`{what}` must be a whole number")


def _one_line(match: re.Match) -> str:
    return "[" + " ".join(match.group(1).split()) + "]"  # one joint (x, y, confidence) per line in the JSON


def closest_size(width: int, height: int, limits: Limits | None = None) -> tuple[int, int]:
    """The standard canvas size whose aspect ratio is closest to `width / height`."""
    sizes = (limits or Limits()).size_choices
    aspect = np.log(width / height)
    return min(sizes, key=lambda size: (abs(np.log(size[0] / size[1]) - aspect), size[0] * size[1]))


# ---- rendering ---------------------------------------------------------------------------------------------


def draw_skeleton(poses: list[np.ndarray], width: int, height: int) -> Image.Image:
    """OpenPose-18 body skeletons on black (perception's renderer, the one the OpenPose ControlNets expect)."""
    from magicid.perception.openpose import draw_openpose

    return draw_openpose(poses, width, height)
