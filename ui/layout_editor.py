"""Layout editor: template picker, poses from a photo, draggable joints and people, per-person edits, JSON in/out.

On the canvas, drag a joint to move it, or drag a face box to move the whole person (see `ui/drag_canvas.py`).
The selected person can also be mirrored, scaled, nudged, removed, or given another identity with the
controls below the canvas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import gradio as gr

from magicid.config import Limits
from magicid.layout import TEMPLATES, Layout
from ui.drag_canvas import CSS as CANVAS_CSS
from ui.drag_canvas import JS as CANVAS_JS
from ui.drag_canvas import Drag, apply_drag, canvas_html
from ui.files import session_file
from ui.handlers import user_errors
from ui.presets import parse_size, size_label


DRAG_HINT = "Drag a joint to move it, or drag a face box to move the whole person."
NUDGE = 0.03  # canvas fraction per arrow click
SCALE_STEP = 1.1
BUTTONS = {
    "mirror": "⇋ Mirror", "bigger": "+ Bigger", "smaller": "− Smaller", "left": "← Left", "right": "Right →",
    "up": "↑ Up", "down": "↓ Down", "add": "Add person", "remove": "Remove",
}  # fmt: skip


@dataclass
class LayoutFns:
    """What the editor calls: `template(name, n, w, h)`, `from_photo(photo, w, h, n)`, `from_file(path)` -> Layout."""

    template: Callable[[str, int, int, int], Layout]
    from_photo: Callable[..., Layout]
    from_file: Callable[[str], Layout]


@dataclass
class LayoutEditor:
    layout: gr.State
    template: gr.Dropdown
    size: gr.Dropdown
    canvas: gr.HTML
    status: gr.Markdown


def create_layout_editor(fns: LayoutFns, num_people: gr.Slider, limits: Limits, initial_people: int = 1) -> LayoutEditor:
    """Build the editor's widgets (inside the current Blocks context) and wire its events."""
    sizes = [size_label(w, h) for w, h in limits.size_choices]
    first = fns.template(TEMPLATES[0], initial_people, *limits.size_choices[0])
    layout = gr.State(first)
    with gr.Row():
        template = gr.Dropdown(list(TEMPLATES), value=TEMPLATES[0], label="Template", scale=2)
        size = gr.Dropdown(sizes, value=sizes[0], label="Size / aspect", scale=2)
        reset = gr.Button("↺ Reset to template", scale=1)
    canvas = gr.HTML(canvas_html(first), css_template=CANVAS_CSS, js_on_load=CANVAS_JS, elem_id="layout-canvas")
    status = gr.Markdown(DRAG_HINT, elem_id="layout-status")
    with gr.Row():
        person = gr.Dropdown(_person_choices(first), value=0, label="Person", scale=1, min_width=100)
        shows = gr.Dropdown(_identity_choices(initial_people), value=0, label="Shows identity", scale=1, min_width=120)
    with gr.Row():
        buttons = {action: gr.Button(label, size="sm", variant="stop" if action == "remove" else "secondary") for action, label in BUTTONS.items()}
    with gr.Accordion("Poses from a photo, layout files", open=False):
        with gr.Row():
            photo = gr.Image(type="filepath", label="Photo of people", sources=["upload"], height=200, elem_id="pose-photo")
            with gr.Column():
                extract = gr.Button("Extract poses from photo", elem_id="extract-poses")
                upload = gr.UploadButton("Load layout JSON", file_types=[".json"])
                export = gr.Button("Save layout JSON")
                exported = gr.File(label="Layout file", visible=False)

    view = [layout, canvas, status, person, shows]
    template.change(partial(_from_template, fns), [template, num_people, size], view)
    reset.click(partial(_from_template, fns), [template, num_people, size], view)
    num_people.change(partial(_on_count, fns), [num_people, layout, template, size], view)
    size.change(_on_size, [size, layout], view)
    extract.click(partial(_on_extract, fns), [photo, size, num_people], view)
    upload.upload(partial(_on_upload, fns), [upload, num_people], view)
    export.click(_on_export, [layout], [exported])
    canvas.release(_on_drag, [layout], view)
    person.input(_on_person, [layout, person], view)
    shows.input(_on_shows, [layout, person, shows], view)
    for action, button in buttons.items():
        button.click(partial(_on_button, action), [layout, person], view)
    return LayoutEditor(layout=layout, template=template, size=size, canvas=canvas, status=status)


def _view(new: Layout, message: str, selected: tuple | None = None, current_person: int = 0) -> tuple:
    """Values for the editor's outputs: layout, canvas, status, person and identity dropdowns."""
    current_person = min(max(int(current_person or 0), 0), max(len(new.people) - 1, 0))
    identity = new.people[current_person].identity if new.people else None
    return (
        new, canvas_html(new, selected=selected), message,
        gr.update(choices=_person_choices(new), value=current_person),
        gr.update(choices=_identity_choices(max(new_count(new), 1)), value=-1 if identity is None else identity),
    )  # fmt: skip


def _from_template(fns: LayoutFns, name: str, count: int, size_value: str) -> tuple:
    with user_errors():
        new = fns.template(name, int(count), *parse_size(size_value))
    return _view(new, f"Template **{name}** with {int(count)} people. {DRAG_HINT}")


def _on_count(fns: LayoutFns, count: int, current: Layout, name: str, size_value: str) -> tuple:
    count = int(count)
    if len(current.people) >= count:  # keep hand-made or photo layouts; just reassign left to right
        with user_errors():
            return _view(current.assign_identities(count), f"{count} identities assigned left to right.")
    return _from_template(fns, name, count, size_value)


def _on_size(size_value: str, current: Layout) -> tuple:
    return _view(current.fit_to(*parse_size(size_value)), f"Canvas is now {size_value}.")


def _on_extract(fns: LayoutFns, path: str | None, size_value: str, count: int) -> tuple:
    with user_errors():
        new = fns.from_photo(path, *parse_size(size_value), int(count))
    return _view(new, f"Found {len(new.people)} people in the photo; identities assigned left to right.")


def _on_upload(fns: LayoutFns, file, count: int) -> tuple:
    with user_errors():
        new = fns.from_file(getattr(file, "name", file))
        if not any(p.identity is not None for p in new.people) and len(new.people) >= int(count):
            new = new.assign_identities(int(count))
    return _view(new, f"Loaded a layout with {len(new.people)} people.")


def _on_export(current: Layout):
    path = session_file("magicid-layout.json")
    current.to_json(path)
    return gr.update(value=str(path), visible=True)


def _on_drag(current: Layout, evt: gr.EventData) -> tuple:
    drag = Drag.from_event(evt)
    with user_errors():
        new, message = apply_drag(current, drag)
    return _view(new, message, (drag.person, None), drag.person)


def _on_person(current: Layout, index: int) -> tuple:
    return _view(current, f"Person #{int(index) + 1} selected.", (int(index), None), index)


def _on_button(action: str, current: Layout, index: int) -> tuple:
    with user_errors():
        new, message = button_edit(current, action, int(index or 0))
    return _view(new, message, None, min(int(index or 0), max(len(new.people) - 1, 0)))


def _on_shows(current: Layout, index: int, identity: int) -> tuple:
    if not current.people:
        return _view(current, "The layout has no people.")
    with user_errors():
        new = current.set_identity(int(index or 0), None if identity in (None, -1) else int(identity))
    return _view(new, f"Person #{int(index or 0) + 1} now shows {_identity_label(identity)}.", None, index)


def button_edit(layout: Layout, action: str, person: int) -> tuple[Layout, str]:
    """One of the editor's buttons applied to `person`; returns the new layout and a status line."""
    if action == "add":
        new = layout.add_person()
        return new, f"Added person #{len(new.people)} in the middle; it shows no identity yet."
    if not layout.people:
        return layout, "The layout has no people: add one or pick a template."
    nudges = {"left": (-NUDGE, 0), "right": (NUDGE, 0), "up": (0, -NUDGE), "down": (0, NUDGE)}
    if action in nudges:
        return layout.move(person, *nudges[action]), f"Moved person #{person + 1} {action}."
    if action == "mirror":
        return layout.mirror(person), f"Mirrored person #{person + 1}."
    if action in ("bigger", "smaller"):
        factor = SCALE_STEP if action == "bigger" else 1 / SCALE_STEP
        return layout.scale(person, factor), f"Made person #{person + 1} {action}."
    if action == "remove":
        return layout.remove_person(person), f"Removed person #{person + 1}."
    raise ValueError(f"unknown layout action {action!r}")


def new_count(layout: Layout) -> int:
    """How many identities the layout currently shows (highest assigned index + 1)."""
    assigned = [p.identity for p in layout.people if p.identity is not None]
    return max(assigned) + 1 if assigned else len(layout.people)


def _person_choices(layout: Layout) -> list[tuple[str, int]]:
    return [(f"#{index + 1}", index) for index in range(len(layout.people))]


def _identity_choices(count: int) -> list[tuple[str, int]]:
    return [("nobody", -1)] + [(f"Person {index + 1}", index) for index in range(count)]


def _identity_label(identity) -> str:
    return "nobody" if identity in (None, -1) else f"Person {int(identity) + 1}"
