"""Evaluation suites as data: a case is identity photos + a layout template + a prompt + a seed; a suite is its
cases and the ablation rows the paper's table compares. Suites are built from a folder with one sub-folder of
photos per person (a user's own, or `train.mini_data`'s held-out identities) and saved as `suite.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from magicid.errors import MagicIDError


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
KINDS = ("single", "group", "fullbody", "restore")
RESTORE_FACE_PX = 64  # the restore suite shrinks each photo until its face is this wide (DIIR: below 100 px)
EVERY_FACE_PX = 1024  # a DIIR threshold above every face of a suite's layouts (at most 1024 px wide)


@dataclass
class PersonPhotos:
    name: str
    condition: list[str]  # photos the identity is encoded from
    judge: list[str]  # photos the judge's reference is taken from (all of the person's photos)


@dataclass
class Case:
    case_id: str
    people: list[PersonPhotos]
    template: str
    width: int
    height: int
    prompt: str
    seed: int
    source: str | None = None  # restore suite: the photo whose face is shrunk and restored (not a condition photo)


@dataclass
class Row:
    """One line of the table: a name and the generation settings it changes."""

    name: str
    overrides: dict = field(default_factory=dict)
    weights: str | None = None  # another trained folder of the same profile (e.g. trained without L_cfa)
    diir_baseline: str | None = None  # the row this one differs from only by DIIR: the faces whose similarity rose


@dataclass
class Suite:
    name: str
    kind: str
    cases: list[Case]
    rows: list[Row]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Suite:
        data = json.loads(text)
        cases = [Case(**{**case, "people": [PersonPhotos(**p) for p in case["people"]]}) for case in data["cases"]]
        return cls(data["name"], data["kind"], cases, [Row(**row) for row in data["rows"]])


def rows_for(kind: str) -> list[Row]:
    """The ablations of each suite (the paper's Tables 1-4), plus `ID off`, which shows what the ID path adds.
    Rows with a `diir_baseline` are paired with it: same seed, same picture before DIIR."""
    if kind == "single":
        return [Row("MagicID"), Row("ID off", {"id_scale": 0.0})]
    if kind == "group":  # MagicID restores the faces below the threshold, as it does for a user; MagicID-mini's
        # threshold shrinks with its 128 px canvas, so "DIIR on every face" shows what DIIR does to its group faces
        every_face = {"restore_small_faces": True, "restore_threshold_px": EVERY_FACE_PX}
        return [Row("MagicID", diir_baseline="DIIR off"), Row("DIIR off", {"restore_small_faces": False}),
                Row("DIIR on every face", every_face, diir_baseline="DIIR off"),
                Row("MGMICA off", {"masked_id_attention": False}), Row("ID off", {"id_scale": 0.0})]  # fmt: skip
    if kind == "restore":  # Table 4: the shrunk photo as it is, and restored by DIIR with the person's other photo
        return [Row("input"), Row("DIIR", {"restore": True}, diir_baseline="input"),
                Row("DIIR, ID off", {"restore": True, "id_scale": 0.0}, diir_baseline="input")]  # fmt: skip
    return [Row("MagicID + DIIR", {"restore_small_faces": True}, diir_baseline="DIIR off"),
            Row("DIIR off", {"restore_small_faces": False})]  # fmt: skip


def people_in(folder: Path) -> list[PersonPhotos]:
    """One person per sub-folder with at least one photo, sorted by name; the first photo conditions."""
    if not folder.is_dir():
        raise MagicIDError(f"--identities {folder.name}: not a folder (use one sub-folder of photos per person)")
    people = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        photos = sorted(str(p) for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            people.append(PersonPhotos(sub.name, photos[:1], photos))
    if len(people) < 2:
        raise MagicIDError(f"--identities {folder.name} needs at least 2 sub-folders of photos (one per person)")
    return people


def build_suite(kind: str, folder: Path, limit: int | None = None, template: str | None = None,
                prompt: str = "a photo of a person", seed: int = 0, face_px: int = RESTORE_FACE_PX) -> Suite:  # fmt: skip
    """`single`: one case per person; `group`: people two and three at a time; `fullbody`: one small full-body
    person per case (DIIR's setting); `restore`: one real photo per person with at least two, its face shrunk to
    `face_px` and restored with the person's other photos."""
    if kind not in KINDS:
        raise MagicIDError(f"unknown suite {kind!r}: choose one of {', '.join(KINDS)}")
    people = people_in(folder)
    if kind == "restore":
        return _restore_suite(folder, people, limit, seed, face_px)
    if kind == "group":
        groups, start = [], 0
        while start + 2 <= len(people):
            size = 2 if len(groups) % 2 == 0 or start + 3 > len(people) else 3
            groups.append(people[start : start + size])
            start += size
    else:
        groups = [[person] for person in people]
    default_template = {"single": "portrait", "group": "portrait", "fullbody": "full-body"}[kind]
    cases = []
    for index, group in enumerate(groups[:limit]):
        width = 1024 if len(group) > 1 else 512
        cases.append(Case(f"{kind}-{index:03d}", group, template or default_template, width, 512, prompt,
                          seed + index))  # fmt: skip
    return Suite(f"{kind} ({folder.name})", kind, cases, rows_for(kind))


def _restore_suite(folder: Path, people: list[PersonPhotos], limit: int | None, seed: int, face_px: int) -> Suite:
    if not 16 <= face_px < 100:
        raise MagicIDError(f"--face-px {face_px}: choose 16 to 99 (DIIR restores faces smaller than 100 px)")
    with_two = [person for person in people if len(person.judge) >= 2]
    if not with_two:
        raise MagicIDError(f"--identities {folder.name}: the restore suite needs people with at least 2 photos")
    cases = [
        Case(f"restore-{index:03d}", [PersonPhotos(p.name, p.judge[:1], p.judge[:-1])], "photo", face_px, face_px, "", seed + index, source=p.judge[-1])
        for index, p in enumerate(with_two[:limit])
    ]  # fmt: skip
    return Suite(f"restore ({folder.name})", "restore", cases, rows_for("restore"))
