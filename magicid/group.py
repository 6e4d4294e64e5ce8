"""Group photos: from a layout and identities to the generator's inputs, and back to a per-identity report.

Before generation, `group_conditions` turns a `Layout` into the ControlNet condition (skeleton, plus face landmarks
where the layout has them) and the face-region masks
`M_id^i` of MGMICA (Alg. 1). After generation, `identity_report` finds the generated faces, matches them to the
layout's regions with the IoU > 0.5 rule and gives each identity its FaceSim, flagging missing or cloned ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from magicid.facesim import FaceMatch, face_sim, mean_face_sim
from magicid.layout import Layout
from magicid.perception.analysis import ImageAnalysis


STATUS_TEXT = {
    "ok": "in place",
    "missing": "missing: no face was generated in its region",
    "misplaced": "misplaced: it appears outside its region",
    "duplicate": "shown twice: another face also looks like it",
}


@dataclass
class GroupConditions:
    """What the generator needs for a group photo, at the generation size."""

    layout: Layout  # fitted to the generation size, identities assigned
    control_image: Image.Image  # OpenPose skeleton, with the face landmarks of people that have them
    id_masks: torch.Tensor  # (N, height, width) float32 soft face regions M_id^i
    warnings: list[str] = field(default_factory=list)


def group_conditions(
    layout: Layout, num_identities: int, width: int | None = None, height: int | None = None,
    face_landmarks: bool = True,
) -> GroupConditions:
    """Validate `layout` for `num_identities` and render its condition image and masks at `width` x `height`;
    `face_landmarks` False draws the skeletons alone (for a ControlNet that never saw landmarks).

    Without explicit `Person.identity`, identities go to the people left to right. Raises `LayoutError`.
    """
    width, height = width or layout.width, height or layout.height
    fitted = layout if (width, height) == (layout.width, layout.height) else layout.fit_to(width, height)
    warnings = fitted.validate(num_identities)
    if not any(person.identity is not None for person in fitted.people):
        fitted = fitted.assign_identities(num_identities)
    masks = torch.from_numpy(fitted.identity_masks(num_identities))
    return GroupConditions(fitted, fitted.render_condition(face_landmarks), masks, warnings)


def identity_report(image: Image.Image | ImageAnalysis, layout: Layout, identities: list, embedder=None) -> list[FaceMatch]:
    """Per identity: the generated face in its layout region (IoU > 0.5), its FaceSim to the reference, a status.

    `image` may be the image's `ImageAnalysis` (its faces and embeddings are reused). `identities` are
    `magicid.identity.Identity` objects (or plain embeddings); `layout` is the one generated from (it is fitted to
    the image if the sizes differ).
    """
    if not identities:
        return []
    analysis = ImageAnalysis.of(image)
    if analysis.size != (layout.width, layout.height):
        layout = layout.fit_to(*analysis.size)
    regions = layout.identity_boxes(len(identities))
    references = [np.asarray(getattr(identity, "embedding", identity), dtype=np.float32) for identity in identities]
    return face_sim(analysis, regions, references, embedder=embedder)


def report_lines(matches: list[FaceMatch], names: list[str] | None = None) -> list[str]:
    """One readable line per identity, then the image's mean FaceSim."""
    lines = []
    for match in matches:
        name = names[match.identity] if names and match.identity < len(names) and names[match.identity] else ""
        label = name or f"identity {match.identity + 1}"
        status = STATUS_TEXT.get(match.status, match.status)
        lines.append(f"{label}: FaceSim {match.similarity:.2f}, {status}")
    if matches:
        lines.append(f"mean FaceSim {mean_face_sim(matches):.2f} over {len(matches)} identities")
    return lines
