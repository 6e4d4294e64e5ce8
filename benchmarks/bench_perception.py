"""Perception speed and accuracy on the real test photos; prints one JSON object.

    python benchmarks/bench_perception.py [--testdata ../shared/testdata] [--limit N]

Reports median / max seconds per photo for each stage (after one warm-up photo), face counts per group and
full-body photo, and identity verification AUC over all portrait pairs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from magicid.imageio import load_image  # noqa: E402
from magicid.perception import (  # noqa: E402
    detect_faces,
    detect_poses,
    face_landmarks,
    face_region_mask,
    get_face_embedder,
    identity_similarity,
)


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def summary(seconds: list[float]) -> dict:
    return {"median_s": round(statistics.median(seconds), 4), "max_s": round(max(seconds), 4), "n": len(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testdata", default=str(Path(__file__).resolve().parents[2] / "shared" / "testdata"))
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos of each folder")
    args = parser.parse_args()
    root = Path(args.testdata)

    def photos(folder: str) -> list[Path]:
        found = sorted((root / folder).rglob("*.jpg"))
        return found[: args.limit] if args.limit else found

    embedder = get_face_embedder()
    detect_faces(load_image(photos("group")[0]))  # warm-up: model loading is not per-photo cost
    stages = {name: [] for name in ("load", "detect_faces", "embed", "landmarks", "mask", "detect_poses")}
    counts = {}
    for path in photos("group") + photos("fullbody") + photos("pose"):
        image, seconds = timed(load_image, path)
        stages["load"].append(seconds)
        faces, seconds = timed(detect_faces, image)
        stages["detect_faces"].append(seconds)
        counts[f"{path.parent.name}/{path.name}"] = len(faces)
        if faces:
            _, seconds = timed(embedder.embed, image, faces[0])
            stages["embed"].append(seconds)
            points, seconds = timed(face_landmarks, image, faces[0])
            stages["landmarks"].append(seconds)
            _, seconds = timed(face_region_mask, image, faces[0], points)
            stages["mask"].append(seconds)
        _, seconds = timed(detect_poses, image, faces)
        stages["detect_poses"].append(seconds)

    labelled = []
    for path in photos("portraits"):
        image = load_image(path)
        faces = detect_faces(image)
        labelled.append((path.parent.name, embedder.embed(image, faces[0])))
    same, different = [], []
    for (a_person, a), (b_person, b) in itertools.combinations(labelled, 2):
        (same if a_person == b_person else different).append(identity_similarity(a, b))
    auc = float((np.array(same)[:, None] > np.array(different)[None, :]).mean()) if same and different else None

    print(json.dumps({
        "embedder": embedder.name,
        "seconds_per_photo": {name: summary(values) for name, values in stages.items() if values},
        "face_counts": counts,
        "verification": {"auc": auc, "same_pairs": len(same), "different_pairs": len(different)},
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
