"""Rebuild the app's example layouts (JSON + skeleton preview PNG) from the built-in templates plus a few edits.

Run: .venv/bin/python -m assets.examples.build_examples   (or with PYTHONPATH=.)   (deterministic; the outputs are committed)
"""

from __future__ import annotations

from pathlib import Path

from magicid.layout import Layout


OUT = Path(__file__).resolve().parent / "layouts"


def portrait_half_body() -> Layout:
    return Layout.from_template("half-body", 1, 512, 768)


def friends_standing() -> Layout:
    layout = Layout.from_template("standing", 2, 768, 512)
    return layout.move(0, 0.06, 0.0).move(1, -0.06, 0.0)  # closer together


def family_full_body() -> Layout:
    layout = Layout.from_template("full-body", 4, 768, 512)
    for child in (1, 2):  # two children in the middle: smaller, feet on the same ground line
        layout = layout.scale(child, 0.72, around="centre").move(child, 0.0, 0.1)
    return layout


def colleagues_sitting() -> Layout:
    return Layout.from_template("sitting", 3, 768, 512)


def couple_waving() -> Layout:
    layout = Layout.from_template("standing", 2, 512, 512)
    for person in (0, 1):
        shoulder = layout.people[person].keypoints[2 if person == 0 else 5]
        side = -1 if person == 0 else 1
        layout = layout.set_joint(person, 3 if person == 0 else 6, shoulder[0] + side * 0.07, shoulder[1] - 0.08)
        layout = layout.set_joint(person, 4 if person == 0 else 7, shoulder[0] + side * 0.09, shoulder[1] - 0.2)
    return layout


EXAMPLES = {
    "portrait-half-body": portrait_half_body,
    "friends-standing": friends_standing,
    "family-full-body": family_full_body,
    "colleagues-sitting": colleagues_sitting,
    "couple-waving": couple_waving,
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, build in EXAMPLES.items():
        layout = build()
        layout.validate(len(layout.people))
        layout.to_json(OUT / f"{name}.json")
        layout.render_skeleton().save(OUT / f"{name}.png", optimize=True)
        print(f"{name}: {len(layout.people)} people, {layout.width}x{layout.height}")


if __name__ == "__main__":
    main()
