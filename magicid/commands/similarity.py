"""`python -m magicid similarity PHOTO_A PHOTO_B`: identity similarity of the main faces of two photos."""

from __future__ import annotations

import argparse
import json
import sys


HELP = "Print the identity similarity (cosine, -1..1) of the largest faces in two photos."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photo_a", help="first photo")
    parser.add_argument("photo_b", help="second photo")
    parser.add_argument("--embedder", choices=("auto", "arcface", "dlib"), default="auto", help="face embedder")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the number")


def run(args: argparse.Namespace) -> int:
    from magicid.facesim import same_person_threshold
    from magicid.imageio import load_image
    from magicid.perception import get_face_embedder, identity_similarity, main_face

    embedder = get_face_embedder(args.embedder)
    embeddings, warnings = [], []
    for path in (args.photo_a, args.photo_b):
        image = load_image(path)
        face, notes = main_face(image)
        warnings.extend(notes)
        embeddings.append(embedder.embed(image, face))
    similarity = identity_similarity(*embeddings)
    same = similarity >= same_person_threshold(embedder)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({"similarity": round(similarity, 4), "embedder": embedder.name, "same_person": bool(same),
                          "warnings": warnings}))  # fmt: skip
    else:
        print(f"{similarity:.4f}")
        print(f"({embedder.name} embedder; {'same person' if same else 'different persons'} at its threshold)",
              file=sys.stderr)  # fmt: skip
    return 0
