"""`python -m magicid analyze --image PHOTO [--json] [--render DIR]`: faces and persons found in a photo."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


HELP = "Print the faces (box, score, size) and persons (OpenPose-18 keypoints) in a photo; optionally render them."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="photo to analyse")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--render", metavar="DIR", help="write <stem>_openpose.png, _landmarks.png, _mask.png here")


def run(args: argparse.Namespace) -> int:
    from magicid.imageio import load_image
    from magicid.perception import detect_faces, detect_poses

    image = load_image(args.image)
    faces = detect_faces(image)
    persons = detect_poses(image, faces)
    report = analysis_report(Path(args.image).name, image.size, faces, persons)
    if args.render:
        written = render(image, faces, persons, Path(args.render), Path(args.image).stem)
        report["rendered"] = [str(path) for path in written]
    print(json.dumps(report, indent=2) if args.json else report_text(report))
    return 0


def analysis_report(name: str, size: tuple[int, int], faces: list, persons: list[np.ndarray]) -> dict:
    return {
        "image": name,
        "width": size[0],
        "height": size[1],
        "faces": [
            {"box": [round(float(v), 1) for v in face.box], "score": round(face.score, 4), "size": round(face.size, 1)}
            for face in faces
        ],
        "persons": [{"keypoints": np.round(person, 4).tolist()} for person in persons],
    }


def report_text(report: dict) -> str:
    lines = [f"{report['image']}: {report['width']}x{report['height']}, {len(report['faces'])} face(s), "
             f"{len(report['persons'])} person(s)"]  # fmt: skip
    for index, face in enumerate(report["faces"]):
        box = ", ".join(f"{v:.0f}" for v in face["box"])
        lines.append(f"  face {index}: box ({box}) score {face['score']:.3f} size {face['size']:.0f} px")
    for index, person in enumerate(report["persons"]):
        joints = sum(1 for _, _, conf in person["keypoints"] if conf > 0)
        neck = person["keypoints"][1]
        lines.append(f"  person {index}: {joints}/18 joints, neck at ({neck[0]:.3f}, {neck[1]:.3f})")
    lines.extend(f"  wrote {path}" for path in report.get("rendered", []))
    return "\n".join(lines)


def render(image, faces: list, persons: list[np.ndarray], folder: Path, stem: str) -> list[Path]:
    """Skeleton, landmark and face-mask images, all at the photo's size."""
    from PIL import Image

    from magicid.perception import draw_face_landmarks, draw_openpose, face_landmarks, face_region_mask

    folder.mkdir(parents=True, exist_ok=True)
    landmarks = [face_landmarks(image, face) for face in faces]
    mask = np.zeros((image.height, image.width), dtype=np.float32)
    for face, points in zip(faces, landmarks):
        mask = np.maximum(mask, face_region_mask(image, face, points))
    outputs = {
        "openpose": draw_openpose(persons, *image.size),
        "landmarks": draw_face_landmarks(landmarks, *image.size),
        "mask": Image.fromarray(np.round(mask * 255).astype(np.uint8)),
    }
    paths = []
    for kind, picture in outputs.items():
        path = folder / f"{stem}_{kind}.png"
        picture.save(path)
        paths.append(path)
    return paths
