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
from ui.events import PRIVATE
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
    names: gr.State  # per session: the name typed in each identity card, shown on the canvas
    person: gr.Dropdown
    shows: gr.Dropdown

    @property
    def view(self) -> list:
        """The components `_view` fills."""
        return [self.layout, self.canvas, self.status, self.person, self.shows]


def create_layout_editor(fns: LayoutFns, num_people: gr.Slider, limits: Limits, initial_people: int = 1) -> LayoutEditor:
    """Build the editor's widgets (inside the current Blocks context) and wire its events."""
    sizes = [size_label(w, h) for w, h in limits.size_choices]
    first = fns.template(TEMPLATES[0], initial_people, *limits.size_choices[0])
    layout = gr.State(first, time_to_live=limits.session_ttl_s)
    names = gr.State(default_names(limits.max_identities), time_to_live=limits.session_ttl_s)
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
            photo = gr.File(label="Photo of people", file_types=["image"], height=120, elem_id="pose-photo")
            with gr.Column():
                extract = gr.Button("Extract poses from photo", elem_id="extract-poses")
                upload = gr.UploadButton("Load layout JSON", file_types=[".json"])
                export = gr.Button("Save layout JSON")
                exported = gr.File(label="Layout file", visible=False)

    editor = LayoutEditor(layout, template, size, canvas, status, names, person, shows)
    view = editor.view
    template.change(partial(_from_template, fns), [template, num_people, size, names], view, **PRIVATE)
    reset.click(partial(_from_template, fns), [template, num_people, size, names], view, **PRIVATE)
    num_people.change(partial(_on_count, fns), [num_people, layout, template, size, names], view, **PRIVATE)
    size.change(_on_size, [size, layout, names], view, **PRIVATE)
    extract.click(partial(_on_extract, fns), [photo, size, num_people, names], view, **PRIVATE)
    upload.upload(partial(_on_upload, fns), [upload, num_people, names], view, **PRIVATE)
    export.click(_on_export, [layout], [exported], **PRIVATE)
    canvas.release(_on_drag, [layout, names], view, **PRIVATE)
    person.input(_on_person, [layout, person, names], view, **PRIVATE)
    shows.input(_on_shows, [layout, person, shows, names], view, **PRIVATE)
    for action, button in buttons.items():
        button.click(partial(_on_button, action), [layout, person, names], view, **PRIVATE)
    return editor


def connect_names(editor: LayoutEditor, name_boxes: list[gr.Textbox]) -> None:
    """Typing a name in identity card `i` relabels identity `i` on the canvas and in "Shows identity"."""
    for index, box in enumerate(name_boxes):
        box.change(
            partial(_on_name, index), [editor.layout, editor.person, box, editor.names], [*editor.view, editor.names],
            trigger_mode="always_last", show_progress="hidden", **PRIVATE,
        )  # fmt: skip


def default_names(count: int) -> list[str]:
    """The identity cards' initial names."""
    return [f"Person {index + 1}" for index in range(count)]


def rename(names: list[str] | None, index: int, name: str) -> list[str]:
    """`names` with identity `index` called `name` (the card's placeholder name when blank)."""
    names = list(names or [])
    names += default_names(index + 1)[len(names) :]
    names[index] = (name or "").strip() or f"Person {index + 1}"
    return names


def _on_name(index: int, current: Layout, person: int, name: str, names: list[str]) -> tuple:
    names = rename(names, index, name)
    return (*_view(current, f"Identity {index + 1} is now called {names[index]}.", None, person, names), names)


def _view(
    new: Layout, message: str, selected: tuple | None = None, current_person: int = 0, names: list[str] | None = None
) -> tuple:
    """Values for the editor's outputs: layout, canvas, status, person and identity dropdowns."""
    current_person = min(max(int(current_person or 0), 0), max(len(new.people) - 1, 0))
    identity = new.people[current_person].identity if new.people else None
    return (
        new, canvas_html(new, selected=selected, names=names), message,
        gr.update(choices=_person_choices(new), value=current_person),
        gr.update(choices=_identity_choices(max(new_count(new), 1), names), value=-1 if identity is None else identity),
    )  # fmt: skip


def _from_template(fns: LayoutFns, name: str, count: int, size_value: str, names: list[str]) -> tuple:
    with user_errors():
        new = fns.template(name, int(count), *parse_size(size_value))
    return _view(new, f"Template **{name}** with {people_count(int(count))}. {DRAG_HINT}", names=names)


def _on_count(fns: LayoutFns, count: int, current: Layout, name: str, size_value: str, names: list[str]) -> tuple:
    count = int(count)
    if len(current.people) >= count:  # keep hand-made or photo layouts; just reassign left to right
        with user_errors():
            return _view(current.assign_identities(count), f"{count} identities assigned left to right.", names=names)
    return _from_template(fns, name, count, size_value, names)


def _on_size(size_value: str, current: Layout, names: list[str]) -> tuple:
    return _view(current.fit_to(*parse_size(size_value)), f"Canvas is now {size_value}.", names=names)


def _on_extract(fns: LayoutFns, path: str | None, size_value: str, count: int, names: list[str]) -> tuple:
    with user_errors():
        new = fns.from_photo(path, *parse_size(size_value), int(count))
    return _view(new, f"Found {people_count(len(new.people))} in the photo; identities assigned left to right.", names=names)


def _on_upload(fns: LayoutFns, file, count: int, names: list[str]) -> tuple:
    with user_errors():
        new = fns.from_file(getattr(file, "name", file))
        if not any(p.identity is not None for p in new.people) and len(new.people) >= int(count):
            new = new.assign_identities(int(count))
    return _view(new, f"Loaded a layout with {people_count(len(new.people))}.", names=names)


def _on_export(current: Layout):
    path = session_file("magicid-layout.json")
    current.to_json(path)
    return gr.update(value=str(path), visible=True)


def _on_drag(current: Layout, names: list[str], evt: gr.EventData) -> tuple:
    drag = Drag.from_event(evt)
    with user_errors():
        new, message = apply_drag(current, drag)
    return _view(new, message, (drag.person, None), drag.person, names)


def _on_person(current: Layout, index: int, names: list[str]) -> tuple:
    return _view(current, f"Person #{int(index) + 1} selected.", (int(index), None), index, names)


def _on_button(action: str, current: Layout, index: int, names: list[str]) -> tuple:
    with user_errors():
        new, message = button_edit(current, action, int(index or 0))
    return _view(new, message, None, min(int(index or 0), max(len(new.people) - 1, 0)), names)


def _on_shows(current: Layout, index: int, identity: int, names: list[str]) -> tuple:
    if not current.people:
        return _view(current, "The layout has no people.", names=names)
    with user_errors():
        new = current.set_identity(int(index or 0), None if identity in (None, -1) else int(identity))
    message = f"Person #{int(index or 0) + 1} now shows {_identity_label(identity, names)}."
    return _view(new, message, None, index, names)


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


def _identity_choices(count: int, names: list[str] | None = None) -> list[tuple[str, int]]:
    return [("nobody", -1)] + [(_identity_label(index, names), index) for index in range(count)]


def _identity_label(identity, names: list[str] | None = None) -> str:
    if identity in (None, -1):
        return "nobody"
    identity = int(identity)
    return names[identity] if names and identity < len(names) and names[identity] else f"Person {identity + 1}"


def people_count(count: int) -> str:
    return "1 person" if count == 1 else f"{count} people"
