"""`python -m magicid evaluate`: metrics against hand-computed values, judge choice, suites, and a smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from magicid.errors import MissingWeightsError
from magicid.evaluation.judges import pick_judge
from magicid.evaluation.metrics import PersonScore, aggregate, pose_error, score_image
from magicid.evaluation.runner import TABLE_COLUMNS, _add_diir_columns
from magicid.evaluation.suites import RESTORE_FACE_PX, Case, Row, Suite, build_suite, rows_for
from magicid.perception.analysis import ImageAnalysis
from magicid.perception.faces import Face


class BoxJudge:
    """Embeds a face by where it is: faces left of x=100 look like person 0, the others like person 1."""

    name = "box"
    dim = 2

    def __init__(self):
        self.calls = 0

    def embed(self, image, face):
        self.calls += 1
        return np.array([1.0, 0.0]) if face.box[0] < 100 else np.array([0.0, 1.0])


def face_at(x0: float, y0: float = 20, side: float = 40) -> Face:
    eyes_y, nose_y = y0 + side * 0.4, y0 + side * 0.6
    kps5 = np.array([[x0 + side * 0.3, eyes_y], [x0 + side * 0.7, eyes_y], [x0 + side * 0.5, nose_y],
                     [x0 + side * 0.35, y0 + side * 0.8], [x0 + side * 0.65, y0 + side * 0.8]])  # fmt: skip
    return Face(box=np.array([x0, y0, x0 + side, y0 + side], float), score=0.99, kps5=kps5)


def skeleton_for(face: Face) -> np.ndarray:
    pose = np.zeros((18, 3))
    pose[0, :2], pose[14, :2], pose[15, :2] = face.kps5[2], face.kps5[0], face.kps5[1]
    pose[[0, 14, 15], 2] = 1
    return pose


REFERENCES = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
IMAGE = Image.new("RGB", (256, 128))


def test_faces_at_their_boxes_score_their_own_reference():
    faces, judge = [face_at(20), face_at(150)], BoxJudge()
    regions = [face.box for face in faces]
    scores = score_image(ImageAnalysis(IMAGE, faces), regions, REFERENCES, REFERENCES[::-1],
                         [skeleton_for(f) for f in faces], judge)  # fmt: skip
    assert judge.calls == 2  # each face embedded once, for FaceSim and for the shuffled and nearest checks
    assert [s.status for s in scores] == ["ok", "ok"]
    assert [s.face_sim for s in scores] == [pytest.approx(1.0)] * 2
    assert [s.shuffled_sim for s in scores] == [pytest.approx(0.0)] * 2
    assert all(s.nearest_is_own for s in scores)
    assert all(s.pose_error == pytest.approx(0.0) for s in scores)


def test_a_face_away_from_its_box_scores_zero():
    """The IoU > 0.5 rule: a face of the right person drawn at the wrong place is not counted."""
    faces = [face_at(20)]
    regions = [np.array([20.0, 80, 60, 120])]  # below the face: IoU 0
    scores = score_image(ImageAnalysis(IMAGE, faces), regions, REFERENCES[:1], REFERENCES[1:], [np.zeros((18, 3))],
                         BoxJudge())  # fmt: skip
    assert scores[0].status in ("missing", "misplaced") and scores[0].face_sim == 0.0
    row = aggregate(scores, [1.0], BoxJudge())
    assert row["face_sim"] == 0.0 and row["found_at_box"] == 0.0 and row["own_beats_shuffled"] is None


def test_a_swapped_pair_scores_lower_than_the_right_order():
    faces = [face_at(20), face_at(150)]
    regions = [face.box for face in faces]
    right = aggregate(score_image(ImageAnalysis(IMAGE, faces), regions, REFERENCES, REFERENCES[::-1], [np.zeros((18, 3))] * 2,
                                  BoxJudge()), [1.0], BoxJudge())  # fmt: skip
    swapped = aggregate(score_image(ImageAnalysis(IMAGE, faces), regions, REFERENCES[::-1], REFERENCES, [np.zeros((18, 3))] * 2,
                                    BoxJudge()), [1.0], BoxJudge())  # fmt: skip
    assert right["face_sim"] > swapped["face_sim"]
    assert right["nearest_is_own"] == 1.0 and swapped["nearest_is_own"] == 0.0
    assert right["own_beats_shuffled"] == 1.0 and swapped["own_beats_shuffled"] == 0.0


def test_pose_error_is_the_eye_and_nose_distance_over_the_face_size():
    face = face_at(20, side=40)
    skeleton = skeleton_for(face)
    skeleton[[0, 14, 15], 0] += 4  # every point 4 px to the right: 10% of a 40 px face
    assert pose_error(face, skeleton) == pytest.approx(0.1)
    assert pose_error(face, np.zeros((18, 3))) is None


def test_aggregate_counts_missing_and_duplicates():
    scores = [PersonScore("ok", 0.8, 0.9, 0.1, None, 0.05), PersonScore("missing", 0.0, 0.0, None, None, None),
              PersonScore("duplicate", 0.6, 0.7, 0.7, None, None), PersonScore("ok", 0.4, 0.6, 0.5, None, 0.15)]  # fmt: skip
    row = aggregate(scores, [2.0, 4.0], BoxJudge())
    assert row["face_sim"] == pytest.approx(0.45)  # (0.8 + 0 + 0.6 + 0.4) / 4: missing counts as 0
    assert row["found_at_box"] == 0.75 and row["missing"] == 0.25 and row["duplicate"] == 0.25
    assert row["own_beats_shuffled"] == pytest.approx(1 / 3)  # 0.8 > 0.1 only
    assert row["pose_error"] == pytest.approx(0.1) and row["seconds_per_image"] == 3.0


def test_the_conditioning_embedder_never_judges_by_default():
    with pytest.raises(MissingWeightsError, match="conditions this model"):
        pick_judge("dlib", conditioning="dlib")
    assert pick_judge("dlib", conditioning="dlib", allow_conditioning=True).name == "dlib"


def test_suites_are_built_from_one_folder_per_person(testdata, tmp_path):
    single = build_suite("single", testdata / "portraits")
    assert len(single.cases) == len([p for p in (testdata / "portraits").iterdir() if p.is_dir()])
    assert [row.name for row in single.rows] == ["MagicID", "ID off"]
    group = build_suite("group", testdata / "portraits", limit=3)
    assert [len(case.people) for case in group.cases] == [2, 3, 2]
    assert {row.name for row in group.rows} == {"MagicID", "DIIR off", "DIIR on every face", "MGMICA off", "ID off"}
    assert Suite.from_json(group.to_json()) == group
    with pytest.raises(Exception, match="sub-folder"):
        build_suite("single", tmp_path)


def smoke_run(suite: str, testdata, out: Path) -> tuple[list[str], dict]:
    """`python -m magicid evaluate` on one case of `suite` with the tiny profile; its command and valid results."""
    command = [sys.executable, "-m", "magicid", "evaluate", "--suite", suite, "--identities",
               str(testdata / "portraits"), "--out", str(out), "--profile", "tiny", "--limit", "1", "--steps", "1",
               "--judge", "dlib", "--allow-conditioning-judge"]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    validate_results(results)
    return command, results


def test_smoke_run_writes_a_table_with_every_row_and_column(testdata, tmp_path):
    out = tmp_path / "eval"
    command, results = smoke_run("group", testdata, out)
    assert results["profile"] == "tiny" and results["judge"] == "dlib"
    assert set(results["rows"]) == {"MagicID", "DIIR off", "DIIR on every face", "MGMICA off", "ID off"}
    for row in results["rows"].values():
        assert row["cases"] == 1 and {key for key, _ in TABLE_COLUMNS} <= set(row)
    assert len(results["cases"]) == 5 and all(len(case["scores"]) == 2 for case in results["cases"])
    assert all(row["face_fid"] > 0 for row in results["rows"].values()) and "face FID" not in results["not_measured"]
    table = (out / "table.md").read_text()
    assert all(f"| {name} |" in table for name in results["rows"]) and all(t in table for _, t in TABLE_COLUMNS)
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0
    assert len((out / "cases.jsonl").read_text().splitlines()) == 5  # resumed: nothing generated again


def test_diir_rises_count_faces_found_before_diir_against_the_same_picture():
    suite = Suite("group", "group", [Case("a", [], "portrait", 256, 128, "", 0), Case("b", [], "portrait", 256, 128, "", 1)],
                  rows_for("group"))  # fmt: skip

    def entry(*scores):
        return {"scores": [{"status": status, "face_sim": sim} for status, sim in scores]}

    done = {("a", "DIIR off"): entry(("ok", 0.2), ("missing", 0.0)), ("a", "MagicID"): entry(("ok", 0.3), ("ok", 0.4)),
            ("b", "DIIR off"): entry(("ok", 0.5), ("ok", 0.1)), ("b", "MagicID"): entry(("missing", 0.0), ("ok", 0.2)),
            ("a", "DIIR on every face"): entry(("ok", 0.2), ("ok", 0.9)), ("a", "ID off"): entry(("ok", 0.9), ("ok", 0.9))}  # fmt: skip
    rows = {row.name: {} for row in suite.rows}
    _add_diir_columns(rows, suite, done)
    assert rows["MagicID"]["similarity_rises"] == 2 / 3  # a's second face was not found before DIIR; b's first was lost
    assert rows["DIIR on every face"]["similarity_rises"] is None  # its one face found before is unchanged
    assert rows["ID off"]["similarity_rises"] is None and rows["DIIR off"]["similarity_rises"] is None


def test_the_restore_suite_shrinks_a_photo_the_model_never_saw(testdata):
    suite = build_suite("restore", testdata / "portraits", limit=2)
    assert [row.name for row in suite.rows] == ["input", "DIIR", "DIIR, ID off"] and len(suite.cases) == 2
    for case in suite.cases:
        (person,) = case.people
        assert case.source not in person.condition and case.source not in person.judge
        assert case.width == case.height == RESTORE_FACE_PX


def test_restore_smoke_run_changes_no_pixel_outside_the_masks(testdata, tmp_path):
    out = tmp_path / "restore"
    _, results = smoke_run("restore", testdata, out)
    rows = results["rows"]
    assert rows["DIIR"]["changed_outside_masks"] == 0 and rows["input"]["changed_outside_masks"] is None
    assert rows["DIIR"]["similarity_rises"] in (0.0, 1.0) and rows["input"]["similarity_rises"] is None
    before, after = (np.asarray(Image.open(out / "images" / row / "restore-000.png"), np.int16) for row in ("input", "diir"))
    assert before.shape == after.shape and np.abs(after - before).max() > 0  # the face was restored
    input_case = next(case for case in results["cases"] if case["row"] == "input")
    assert input_case["scores"][0]["status"] == "ok"  # the shrunk face is found (tiny's restored face is noise)
    assert "judge similarity rises" in (out / "table.md").read_text()


class RecordingEngine:
    """Just what `row_engine` reads: a profile, limits and the face embedder."""

    def __init__(self, profile, limits=None, embedder=None):
        self.profile, self.limits, self.embedder = profile, limits, embedder
        self.identity_encoder = SimpleNamespace(embedder=embedder or "dlib")


def test_a_row_with_other_weights_gets_its_own_engine_once(tmp_path):
    from magicid.config import ProfileConfig
    from magicid.evaluation.runner import row_engine

    engine, engines = RecordingEngine(ProfileConfig(name="mini")), {}
    assert row_engine(engine, Row("MagicID"), engines) is engine
    other = row_engine(engine, Row("L_cfa off", weights=str(tmp_path)), engines)
    assert other is not engine and other.profile.magicid_weights == str(tmp_path) and other.embedder == "dlib"
    assert row_engine(engine, Row("L_cfa off", weights=str(tmp_path)), engines) is other


def test_ablation_rows_name_trained_folders_and_refuse_anything_else(tmp_path):
    from magicid.commands.evaluate import ablation_rows
    from magicid.errors import InvalidSettingError

    (tmp_path / "magicid.json").write_text("{}")
    (row,) = ablation_rows([f"L_cfa off={tmp_path}"], "mini")
    assert row.name == "L_cfa off" and row.weights == str(tmp_path.resolve()) and row.overrides == {}
    for specs, profile, message in (([f"={tmp_path}"], "mini", "NAME=FOLDER"), ([f"x={tmp_path}"], "tiny", "trained"),
                                    ([f"x={tmp_path / 'nope'}"], "magicid", "magicid.json")):  # fmt: skip
        with pytest.raises(InvalidSettingError, match=message):
            ablation_rows(specs, profile)


@pytest.mark.parametrize("flag, setting, default", [("cfg-row", "guidance_scale", 5.0), ("id-row", "id_scale", 1.0),
                                                   ("control-row", "controlnet_scale", 1.0)])  # fmt: skip
def test_setting_rows_change_only_their_setting_and_refuse_bad_values(flag, setting, default):
    from magicid.commands.evaluate import SWEEPS, setting_rows
    from magicid.config import GenerationConfig
    from magicid.errors import InvalidSettingError

    sweep = next(sweep for sweep in SWEEPS if sweep.flag == flag)
    rows = setting_rows(sweep, [0.5, 2.5, 2.5], "single")
    assert [row.name for row in rows] == [f"{sweep.label} 0.5", f"{sweep.label} 2.5"]
    changed, paper = GenerationConfig(**rows[1].overrides), GenerationConfig()
    assert getattr(changed, setting) == 2.5 != getattr(paper, setting) == default
    assert {key for key in vars(changed) if getattr(changed, key) != getattr(paper, key)} == {setting}
    assert setting_rows(sweep, [], "restore") == []
    for values, suite, message in (([2.0], "restore", "restore suite"), ([float("nan")], "single", "from 0"),
                                   ([-1.0], "group", "from 0"), ([1e9], "single", "from 0")):  # fmt: skip
        with pytest.raises(InvalidSettingError, match=message):
            setting_rows(sweep, values, suite)


def test_evaluate_cli_takes_a_row_per_setting_value():
    from magicid.cli import build_parser

    args = build_parser().parse_args(["evaluate", "--suite", "single", "--identities", "x", "--out", "y",
                                      "--id-row", "0.5", "--id-row", "0.75", "--control-row", "1.5"])  # fmt: skip
    assert args.id_row == [0.5, 0.75] and args.control_row == [1.5] and args.cfg_row == []


def validate_results(results: dict) -> None:
    import jsonschema

    from magicid.evaluation import runner

    schema = json.loads((Path(runner.__file__).parent / "results.schema.json").read_text())
    jsonschema.validate(results, schema)


def test_the_results_schema_refuses_a_missing_row_metric_and_a_bad_status():
    import jsonschema

    row = {"overrides": {}, "cases": 1, "identities": 1, "face_sim": 0.5, "found_at_box": 1.0, "missing": 0.0,
           "misplaced": 0.0, "duplicate": 0.0, "own_beats_shuffled": None, "nearest_is_own": None,
           "pose_error": 0.1, "face_fid": None, "seconds_per_image": 2.0}  # fmt: skip
    case = {"case": "a", "row": "MagicID", "people": ["x"], "seed": 0, "seconds": 1.0, "size": [128, 128],
            "regions": [[0, 0, 10, 10]], "scores": [{"status": "ok", "face_sim": 0.5, "iou": 0.9,
                                                     "shuffled_sim": None, "nearest_is_own": None,
                                                     "pose_error": None}]}  # fmt: skip
    results = {"suite": "s", "kind": "single", "profile": "tiny", "judge": "dlib",
               "settings": {"steps": 1, "guidance_scale": 5.0, "seed": 0},
               "versions": {"magicid": "1", "torch": "2", "diffusers": "3", "python": "3.11"},
               "not_measured": {}, "rows": {"MagicID": row}, "cases": [case]}  # fmt: skip
    validate_results(results)
    for broken in ({**results, "rows": {"MagicID": {k: v for k, v in row.items() if k != "face_fid"}}},
                   {**results, "cases": [{**case, "scores": [{**case["scores"][0], "status": "lost"}]}]},
                   {**results, "rows": {"MagicID": {**row, "found_at_box": 1.5}}}):  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            validate_results(broken)


def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift():
    from magicid.evaluation.fid import frechet_distance

    features = np.random.default_rng(0).normal(size=(64, 8))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(features, features + 1.0) == pytest.approx(8.0, rel=1e-6)  # ||mu shift||^2, same cov
    assert frechet_distance(features, features * 2) > 1.0  # same mean, 4x the covariance
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(features[:1], features)


def test_loading_the_fid_network_shows_the_user_no_deprecation_warning():
    import warnings

    from magicid.evaluation import fid

    fid._inception.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fid._inception()
    assert not [w for w in caught if "jit" in str(w.message)]


def test_face_regions_are_squares_around_the_face_at_inception_size(testdata):
    from magicid.evaluation.fid import INCEPTION_SIDE, face_region, face_region_fid
    from magicid.imageio import load_image

    photo = load_image(testdata / "portraits/barack_obama/1.jpg")
    corner = face_region(photo, [-20, -20, 60, 60])  # past the border: mirrored, not black
    assert corner.size == (INCEPTION_SIDE, INCEPTION_SIDE) and np.asarray(corner).min(axis=(0, 1)).max() > 0
    faces = [face_region(photo, box) for box in ([100, 100, 300, 300], [120, 90, 330, 320], [90, 110, 280, 290])]
    flat = [Image.new("RGB", (INCEPTION_SIDE, INCEPTION_SIDE), colour) for colour in ("grey", "white", "black")]
    assert face_region_fid(faces, faces) < face_region_fid(faces, flat)
