"""The layout canvas as a draggable SVG (a `gr.HTML` with a little JavaScript).

The server draws the picture (skeletons, labelled face regions) and lays SVG handles over it: a ring per
visible joint and a box per face (with its label). Dragging a ring moves that joint; dragging a face box or
its label moves the whole person; a click without moving selects the person. On release the browser sends one
`release` event (kind "joint", "face" or "select"), and the server applies it to the `Layout`, so the Python
`Layout` stays the only source of truth.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from html import escape

from magicid.layout import Layout
from ui.canvas import JOINT_NAMES, draw_canvas, person_label


CSS = """
svg {width: 100%; max-height: 520px; display: block; touch-action: none; user-select: none;}
.joint {cursor: grab;}
.joint:hover, .joint.dragging {fill: rgba(255, 255, 255, 0.6); stroke-width: 3;}
.face {cursor: move;}
.face:hover {fill: rgba(255, 255, 255, 0.12);}
"""  # scoped to the component by Gradio; the SVG also carries its own fill/stroke attributes
JS = """
let drag = null;
const point = (svg, e) => {
  const p = svg.createSVGPoint(); p.x = e.clientX; p.y = e.clientY;
  const q = p.matrixTransform(svg.getScreenCTM().inverse()); return {x: q.x, y: q.y};
};
element.addEventListener('pointerdown', (e) => {
  const handle = e.target.closest('[data-kind]'); const svg = element.querySelector('svg');
  if (!handle || !svg) return;
  const person = handle.dataset.person;
  drag = {handle, svg, kind: handle.dataset.kind, person: Number(person), joint: Number(handle.dataset.joint ?? -1),
          group: svg.querySelector(`g[data-person="${person}"]`), start: point(svg, e)};
  handle.classList.add('dragging'); handle.setPointerCapture(e.pointerId); e.preventDefault();
});
element.addEventListener('pointermove', (e) => {
  if (!drag) return; const p = point(drag.svg, e);
  if (drag.kind === 'joint') { drag.handle.setAttribute('cx', p.x); drag.handle.setAttribute('cy', p.y); }
  else if (drag.group) { drag.group.setAttribute('transform', `translate(${p.x - drag.start.x} ${p.y - drag.start.y})`); }
});
const finish = (e) => {
  if (!drag) return; const p = point(drag.svg, e); const d = drag; drag = null;
  d.handle.classList.remove('dragging');
  const still = Math.hypot(p.x - d.start.x, p.y - d.start.y) < 1;
  trigger('release', {kind: still ? 'select' : d.kind, person: d.person, joint: d.joint, x: p.x, y: p.y,
                      dx: p.x - d.start.x, dy: p.y - d.start.y});
};
element.addEventListener('pointerup', finish);
element.addEventListener('pointercancel', () => { drag = null; });
"""


@dataclass(frozen=True)
class Drag:
    """One finished drag on the canvas, in canvas pixels."""

    kind: str  # "joint" | "face" (moved) | "select" (clicked without moving)
    person: int
    joint: int
    x: float
    y: float
    dx: float
    dy: float

    @classmethod
    def from_event(cls, event) -> Drag:
        """From the `release` event's data: a `gr.EventData` (attributes) or a plain dict."""
        get = event.get if isinstance(event, dict) else lambda key, default=None: getattr(event, key, default)
        return cls(str(get("kind")), int(get("person")), int(get("joint", -1)), *(float(get(k)) for k in ("x", "y", "dx", "dy")))


def canvas_html(layout: Layout, selected: tuple | None = None, names: list[str] | None = None) -> str:
    """SVG markup: the drawn layout as background (face regions labelled with `names`, the identity cards' names),
    with a draggable handle per visible joint and per face."""
    width, height = layout.width, layout.height
    radius = max(8.0, max(width, height) / 60)  # about 10 screen px on a 600 px canvas: easy to grab
    label_px = max(12, width // 40) + 6  # the label font size used by `draw_canvas`, plus its gap
    parts = [
        f'<svg viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="layout editor">',
        f'<image href="{_png_data_url(draw_canvas(layout, names=names, selected=selected))}" x="0" y="0" width="{width}" height="{height}"/>',
    ]
    for index, (person, box) in enumerate(zip(layout.people, layout.face_boxes())):
        parts.append(f'<g data-person="{index}">')
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            y0 -= label_px  # the label above the box is a handle too, clear of the head's joints
            label = escape(person_label(index, person.identity, names))
            parts.append(
                f'<rect class="face" data-kind="face" data-person="{index}" fill="white" fill-opacity="0.01" x="{x0:.1f}" y="{y0:.1f}" '
                f'width="{x1 - x0:.1f}" height="{y1 - y0:.1f}"><title>{label} (drag to move this person)</title></rect>'
            )
        for joint, (x, y, confidence) in enumerate(person.keypoints):
            if confidence > 0:
                title = escape(f"{JOINT_NAMES[joint]} of {person_label(index, person.identity, names)}: drag to move")
                parts.append(
                    f'<circle class="joint" data-kind="joint" data-person="{index}" data-joint="{joint}" fill="white" '
                    f'fill-opacity="0.15" stroke="white" stroke-width="1.5" '
                    f'cx="{x * width:.1f}" cy="{y * height:.1f}" r="{radius:.1f}"><title>{title}</title></circle>'
                )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def apply_drag(layout: Layout, drag: Drag, names: list[str] | None = None) -> tuple[Layout, str]:
    """The layout after `drag`, and a status line naming the person as the canvas does."""
    who = person_label(drag.person, layout.people[drag.person].identity, names) if drag.person < len(layout.people) else ""
    if drag.kind == "joint":
        moved = layout.set_joint(drag.person, drag.joint, drag.x / layout.width, drag.y / layout.height)
        return moved, f"Moved the {JOINT_NAMES[drag.joint]} of {who}."
    moved = layout.move(drag.person, drag.dx / layout.width, drag.dy / layout.height)
    return moved, f"Moved {who}."


def _png_data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
