"""Body poses on real photos and the OpenPose-18 rendering the OpenPose ControlNets expect."""

from __future__ import annotations

import numpy as np
import pytest

from magicid.imageio import load_image
from magicid.perception import detect_poses, draw_openpose
from magicid.perception.openpose import COLORS, NUM_LIMBS
from magicid.perception.poses import BLAZE_FOR_OPENPOSE, openpose_from_blazepose


POSE_PHOTOS = ["acrobats.jpg", "baseball.jpg", "ski_race.jpg", "skier.jpg", "soccer_tackle.jpg"]
MAIN_JOINTS = {"neck": 1, "r-shoulder": 2, "l-shoulder": 5, "r-hip": 8, "l-hip": 11}


@pytest.fixture(scope="module")
def poses_by_photo(testdata):
    found = {}
    for name in POSE_PHOTOS:
        image = load_image(testdata / "pose" / name)
        found[name] = (image, detect_poses(image))
    return found


@pytest.mark.parametrize("name", POSE_PHOTOS)
def test_every_pose_photo_yields_a_skeleton_with_main_joints(poses_by_photo, name):
    _, persons = poses_by_photo[name]
    assert persons, f"no person in {name}"
    complete = [p for p in persons if all(p[index, 2] > 0 for index in MAIN_JOINTS.values())]
    assert complete, f"{name}: no skeleton has {', '.join(MAIN_JOINTS)}"
    for person in persons:
        assert person.shape == (18, 3)
        visible = person[person[:, 2] > 0]
        assert np.all((visible[:, :2] >= 0) & (visible[:, :2] <= 1)) and np.all(visible[:, 2] <= 1)


def test_persons_are_sorted_left_to_right_and_multi_person_found(poses_by_photo):
    _, persons = poses_by_photo["ski_race.jpg"]  # 5 skiers
    assert len(persons) >= 3
    centers = [np.mean(p[p[:, 2] > 0, 0]) for p in persons]
    assert centers == sorted(centers)


def test_skeleton_is_anatomically_plausible(poses_by_photo):
    _, persons = poses_by_photo["soccer_tackle.jpg"]
    person = max(persons, key=lambda p: (p[:, 2] > 0).sum())
    neck, r_hip, l_hip = person[1], person[8], person[11]
    assert neck[1] < min(r_hip[1], l_hip[1])  # upright player: neck above hips


def test_blazepose_mapping_follows_openpose_order():
    blaze = np.zeros((33, 3))
    blaze[:, 2] = 0.9
    blaze[:, 0] = np.linspace(0.1, 0.9, 33)
    blaze[:, 1] = 0.5
    blaze[12] = (0.3, 0.4, 0.95)  # subject's right shoulder
    blaze[11] = (0.7, 0.4, 0.8)  # subject's left shoulder
    blaze[7, 0] = 1.2  # left ear outside the frame
    blaze[27, 2] = 0.1  # left ankle barely visible
    pose = openpose_from_blazepose(blaze)
    np.testing.assert_allclose(pose[2], (0.3, 0.4, 0.95))
    np.testing.assert_allclose(pose[5], (0.7, 0.4, 0.8))
    np.testing.assert_allclose(pose[1], (0.5, 0.4, 0.8))  # neck = mid-shoulders, weakest confidence
    assert pose[17, 2] == 0 and pose[13, 2] == 0
    assert len(BLAZE_FOR_OPENPOSE) == 17 and 1 not in BLAZE_FOR_OPENPOSE


def _star_pose() -> np.ndarray:
    points = [
        (0.50, 0.15), (0.50, 0.28), (0.38, 0.28), (0.30, 0.42), (0.25, 0.55), (0.62, 0.28), (0.70, 0.42),
        (0.75, 0.55), (0.42, 0.55), (0.41, 0.72), (0.40, 0.90), (0.58, 0.55), (0.59, 0.72), (0.60, 0.90),
        (0.47, 0.12), (0.53, 0.12), (0.44, 0.14), (0.56, 0.14),
    ]  # fmt: skip
    return np.array([(x, y, 1.0) for x, y in points])


def test_rendering_uses_openpose_colours_and_limbs():
    image = np.asarray(draw_openpose([_star_pose()], 256, 256))
    assert image.shape == (256, 256, 3) and image[0, 0].tolist() == [0, 0, 0]
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    joint_colours = [c for c in COLORS if c in colours]
    dimmed = [tuple(int(v * 0.6) for v in c) for c in COLORS[:NUM_LIMBS]]
    limb_colours = [c for c in dimmed if c in colours]
    assert len(joint_colours) >= 16, "joint discs must carry the 18 OpenPose colours"
    assert len(limb_colours) >= 12, "limbs must be drawn at 60 % of their OpenPose colour"
    nose_x, nose_y = (np.array([0.50, 0.15]) * 256).astype(int)
    assert tuple(image[nose_y, nose_x]) == COLORS[0]  # nose is red


def test_missing_joints_are_not_drawn():
    pose = _star_pose()
    pose[3:5, 2] = 0  # right elbow and wrist missing
    image = np.asarray(draw_openpose([pose], 256, 256))
    x, y = (pose[4, :2] * 256).astype(int)
    assert image[y, x].tolist() == [0, 0, 0]


def test_empty_pose_list_gives_black_canvas():
    assert np.asarray(draw_openpose([], 64, 32)).max() == 0


def test_controlnet_aux_detector_is_used_when_its_weights_exist(monkeypatch):
    from types import SimpleNamespace

    from PIL import Image

    from magicid.perception import poses

    def person(x: float):
        keypoints = [SimpleNamespace(x=x, y=0.1 + 0.04 * i, score=0.8) for i in range(18)]
        keypoints[4] = None  # right wrist not found
        return SimpleNamespace(body=SimpleNamespace(keypoints=keypoints))

    fake = SimpleNamespace(detect_poses=lambda pixels: [person(0.7), person(0.2)])
    monkeypatch.setattr(poses, "_openpose_detector", lambda: fake)
    persons = detect_poses(Image.new("RGB", (64, 64)), faces=[])
    assert [round(p[0, 0], 2) for p in persons] == [0.2, 0.7]  # left to right
    assert persons[0][4, 2] == 0 and persons[0][1].tolist() == pytest.approx([0.2, 0.14, 0.8])


def test_annotator_folder_needs_all_three_files(tmp_path, monkeypatch):
    from magicid.perception.poses import ANNOTATOR_FILES, openpose_annotator_dir

    monkeypatch.setenv("MAGICID_ANNOTATORS", str(tmp_path))
    (tmp_path / ANNOTATOR_FILES[0]).write_bytes(b"")
    assert openpose_annotator_dir() is None
    for name in ANNOTATOR_FILES[1:]:
        (tmp_path / name).write_bytes(b"")
    assert openpose_annotator_dir() == tmp_path


@pytest.mark.parametrize("name", ["jolie_pitt_couple.jpg", "voc_three_adults.jpg", "friends_cast.jpg"])
def test_people_side_by_side_each_get_the_skeleton_whose_nose_is_on_their_face(testdata, name):
    """Crops end halfway to the neighbours, so a crop shows one person (before: 1 skeleton for the couple, a
    face of the three adults and of the cast without one)."""
    from magicid.perception import detect_faces

    image = load_image(testdata / "group" / name)
    faces = detect_faces(image)
    persons = detect_poses(image, faces=faces)
    noses = [person[0, :2] * image.size for person in persons if person[0, 2] > 0]
    for face in faces:
        x0, y0, x1, y1 = face.box
        assert sum(x0 <= x <= x1 and y0 <= y <= y1 for x, y in noses) == 1, f"{name}: face at {face.box.round()}"


def pose_with(nose_y: float, neck_y: float, shoulders_y: float | None, hips_y: float | None) -> np.ndarray:
    pose = np.zeros((18, 3))
    pose[0], pose[1] = (0.5, nose_y, 1), (0.5, neck_y, 1)
    if shoulders_y is not None:
        pose[2], pose[5] = (0.4, shoulders_y, 1), (0.6, shoulders_y, 1)
    if hips_y is not None:
        pose[8], pose[11] = (0.45, hips_y, 1), (0.55, hips_y, 1)
    return pose


def test_skeletons_whose_head_and_torso_disagree_are_impossible():
    from magicid.perception.poses import is_plausible

    assert is_plausible(pose_with(0.2, 0.3, 0.3, 0.6))  # standing
    assert is_plausible(pose_with(0.8, 0.7, 0.7, 0.4))  # handstand: head and torso both upside down
    assert not is_plausible(pose_with(0.4, 0.3, 0.3, 0.6))  # the nose below the neck on an upright torso
    assert not is_plausible(pose_with(0.2, 0.3, 0.3, 0.1))  # an upright head on an inverted torso
    assert not is_plausible(pose_with(0.4, 0.3, 0.3, None))  # upside-down head, nothing says the body is
    assert is_plausible(pose_with(0.2, 0.3, 0.3, None))
