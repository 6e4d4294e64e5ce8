"""Layout editor: template picker, poses from a photo, draggable joints and people, per-person edits, JSON in/out.

On the canvas, drag a joint to move it, drag a face box to move the whole person, or click a person to select
them (see `ui/drag_canvas.py`). The selected person can also be mirrored, scaled, nudged, removed, or shown with
another person's face with the controls below the canvas. Every edit can be undone.

One person model everywhere: person card `i` is "Person i+1" (or the name typed on it), and the figure on the
canvas that shows card `i`'s face carries that name; removing a figure renames nobody.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import gradio as gr

from magicid.config import Limits
from magicid.layout import TEMPLATES, Layout, people_count
from ui.canvas import person_label
from ui.drag_canvas import CSS as CANVAS_CSS
from ui.drag_canvas import JS as CANVAS_JS
from ui.drag_canvas import Drag, apply_drag, canvas_html
from ui.events import PRIVATE
from ui.files import session_file
from ui.handlers import attempt
from ui.presets import parse_size, size_label


DRAG_HINT = "Drag a joint to move it, drag a face box to move the person, click a person to select them."
NUDGE = 0.03  # canvas fraction per arrow click
SCALE_STEP = 1.1
UNDO_DEPTH = 30
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
    history: gr.State  # per session: earlier layouts, for Undo
    template: gr.Dropdown
    size: gr.Dropdown
    canvas: gr.HTML
    status: gr.Markdown
    names: gr.State  # per session: the name typed in each person card, shown on the canvas
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
    history = gr.State([], time_to_live=limits.session_ttl_s)
    names = gr.State(default_names(limits.max_identities), time_to_live=limits.session_ttl_s)
    with gr.Row():
        template = gr.Dropdown(list(TEMPLATES), value=TEMPLATES[0], label="Template", scale=2)
        size = gr.Dropdown(sizes, value=sizes[0], label="Size / aspect", scale=2)
        reset = gr.Button("↺ Reset to template", scale=1)
        undo = gr.Button("↶ Undo", scale=1, elem_id="layout-undo")
    canvas = gr.HTML(canvas_html(first), css_template=CANVAS_CSS, js_on_load=CANVAS_JS, elem_id="layout-canvas")
    status = gr.Markdown(DRAG_HINT, elem_id="layout-status")
    with gr.Row():
        person = gr.Dropdown(_person_choices(first), value=0, label="Selected person", scale=1, min_width=100, elem_id="layout-person")
        shows = gr.Dropdown(_identity_choices(initial_people), value=0, label="Shows the face of", scale=1, min_width=120)
    with gr.Row():
        buttons = {action: gr.Button(label, size="sm", variant="stop" if action == "remove" else "secondary",
                                     elem_id=f"layout-{action}") for action, label in BUTTONS.items()}  # fmt: skip
    with gr.Accordion("Poses from a photo, layout files", open=False):
        with gr.Row():
            photo = gr.File(label="Photo of people", file_types=["image"], height=120, elem_id="pose-photo")
            with gr.Column():
                extract = gr.Button("Take the poses from this photo", elem_id="extract-poses")
                upload = gr.UploadButton("Load layout JSON", file_types=[".json"])
                export = gr.Button("Save layout JSON")
                exported = gr.File(label="Layout file", visible=False)

    editor = LayoutEditor(layout, history, template, size, canvas, status, names, person, shows)
    edits = [history, layout]  # every edit handler's first inputs
    outputs = [*editor.view, history]

    def on(event, handler, inputs, extra_outputs=()):
        event(recorded(handler, len(extra_outputs)), [*edits, *inputs], [*outputs, *extra_outputs], **PRIVATE)

    on(template.change, partial(_from_template, fns), [template, num_people, size, names])
    on(reset.click, partial(_from_template, fns), [template, num_people, size, names])
    on(num_people.change, partial(_on_count, fns), [num_people, layout, template, size, names])
    on(size.change, _on_size, [size, layout, names])
    on(extract.click, partial(_on_extract, fns, limits.max_identities), [photo, size, names], [num_people])
    on(upload.upload, partial(_on_upload, fns), [upload, num_people, names])
    def on_release(past: list, current: Layout, names_now: list[str], evt: gr.EventData):
        return recorded(_on_drag)(past, current, current, names_now, evt)  # Gradio fills `evt` by annotation

    canvas.release(on_release, [history, layout, names], outputs, **PRIVATE)
    on(person.input, _on_person, [layout, person, names])
    on(shows.input, _on_shows, [layout, person, shows, names])
    for action, button in buttons.items():
        on(button.click, partial(_on_button, action), [layout, person, num_people, names])
    undo.click(_on_undo, [history, person, names], outputs, **PRIVATE)
    export.click(_on_export, [layout], [exported], **PRIVATE)
    return editor


def recorded(handler: Callable, extra_outputs: int = 0) -> Callable:
    """`handler(*inputs) -> view` as an event handler over `(history, current, *inputs)` that also returns the
    history: an edit that changed the layout pushes the old one (for Undo); one that failed says why in the status
    line and leaves the layout, the canvas and the history as they were."""

    def on_event(history: list, current: Layout, *inputs):
        view, error = attempt(handler, *inputs)
        if error is not None:
            return gr.skip(), gr.skip(), f"⚠ {error}", *([gr.skip()] * (3 + extra_outputs))
        if view is None:  # nothing to change: the status line keeps what the last edit said
            return tuple(gr.skip() for _ in range(6 + extra_outputs))
        new = view[0]
        if current is not None and new is not current and new.to_dict() != current.to_dict():
            history = [*(history or []), current][-UNDO_DEPTH:]
        return *view[:5], history, *view[5:]

    return on_event


def _on_undo(history: list, person: int, names: list[str]) -> tuple:
    if not history:
        return gr.skip(), gr.skip(), "Nothing to undo.", gr.skip(), gr.skip(), gr.skip()
    *rest, previous = history
    return (*_view(previous, "Undone.", None, person, names), rest)


def connect_names(editor: LayoutEditor, name_boxes: list[gr.Textbox]) -> None:
    """Typing a name in person card `i` relabels that person on the canvas and in "Shows the face of"."""
    for index, box in enumerate(name_boxes):
        box.change(
            partial(_on_name, index), [editor.layout, editor.person, box, editor.names], [*editor.view, editor.names],
            trigger_mode="always_last", show_progress="hidden", **PRIVATE,
        )  # fmt: skip


def default_names(count: int) -> list[str]:
    """The person cards' initial names."""
    return [f"Person {index + 1}" for index in range(count)]


def rename(names: list[str] | None, index: int, name: str) -> list[str]:
    """`names` with person `index` called `name` (the card's placeholder name when blank)."""
    names = list(names or [])
    names += default_names(index + 1)[len(names) :]
    names[index] = (name or "").strip() or f"Person {index + 1}"
    return names


def _on_name(index: int, current: Layout, person: int, name: str, names: list[str]) -> tuple:
    names = rename(names, index, name)
    return (*_view(current, f"Person {index + 1} is now called {names[index]}.", None, person, names), names)


def _view(
    new: Layout, message: str, selected: tuple | None = None, current_person: int = 0, names: list[str] | None = None
) -> tuple:
    """Values for the editor's outputs: layout, canvas, status, person and identity dropdowns."""
    current_person = min(max(int(current_person or 0), 0), max(len(new.people) - 1, 0))
    identity = new.people[current_person].identity if new.people else None
    return (
        new, canvas_html(new, selected=selected, names=names), message,
        gr.update(choices=_person_choices(new, names), value=current_person),
        gr.update(choices=_identity_choices(max(new_count(new), 1), names), value=-1 if identity is None else identity),
    )  # fmt: skip


def _from_template(fns: LayoutFns, name: str, count: int, size_value: str, names: list[str]) -> tuple:
    new = fns.template(name, int(count), *parse_size(size_value))
    return _view(new, f"Template **{name}** with {people_count(int(count))}. {DRAG_HINT}", names=names)


def _on_count(
    fns: LayoutFns, count: int, current: Layout, template: str, size_value: str, names: list[str]
) -> tuple | None:
    """The cast follows the number of people: an untouched template becomes the template for that many; in an
    edited layout every figure already placed keeps its pose and place."""
    count, shown = int(count), new_count(current)
    if count == shown:  # e.g. the count an extraction just set
        return None
    template = template if template in TEMPLATES else "standing"
    untouched = fns.template(template, shown, current.width, current.height).to_dict() == current.to_dict()
    new = fns.template(template, count, *parse_size(size_value)) if untouched else current.with_identities(count, template)
    return _view(new, f"The photo shows {people_count(count)}.", names=names)


def _on_size(size_value: str, current: Layout, names: list[str]) -> tuple:
    return _view(current.fit_to(*parse_size(size_value)), f"Canvas is now {size_value}.", names=names)


def _on_extract(fns: LayoutFns, max_people: int, path: str | None, size_value: str, names: list[str]) -> tuple:
    """Poses from the photo; the number of people becomes the number found (at most `max_people`)."""
    found = fns.from_photo(path, *parse_size(size_value), max_people)
    count = min(len(found.left_to_right()), max_people)
    new = found.with_identities(count)
    message = f"Found {people_count(len(found.people))} in the photo; the photo you make shows {people_count(count)}."
    return (*_view(new, message, names=names), count)


def _on_upload(fns: LayoutFns, file, count: int, names: list[str]) -> tuple:
    new = fns.from_file(getattr(file, "name", file))
    if not any(p.identity is not None for p in new.people) and len(new.left_to_right()) >= int(count):
        new = new.assign_identities(int(count))
    return _view(new, f"Loaded a layout with {people_count(len(new.people))}.", names=names)


def _on_export(current: Layout):
    path = session_file("magicid-layout.json")
    current.to_json(path)
    return gr.update(value=str(path), visible=True)


def _on_drag(current: Layout, names: list[str], evt: gr.EventData) -> tuple:
    drag = Drag.from_event(evt)
    if drag.kind == "select":
        return _view(current, f"{figure_name(current, drag.person, names)} selected.", (drag.person, None), drag.person, names)
    new, message = apply_drag(current, drag, names)
    return _view(new, message, (drag.person, None), drag.person, names)


def _on_person(current: Layout, index: int, names: list[str]) -> tuple:
    index = int(index or 0)
    return _view(current, f"{figure_name(current, index, names)} selected.", (index, None), index, names)


def _on_button(action: str, current: Layout, index: int, count: int, names: list[str]) -> tuple:
    new, message = button_edit(current, action, int(index or 0), int(count or 1), names)
    selected = len(new.people) - 1 if action == "add" else min(int(index or 0), max(len(new.people) - 1, 0))
    return _view(new, message, None, selected, names)


def _on_shows(current: Layout, index: int, identity: int, names: list[str]) -> tuple:
    if not current.people:
        return _view(current, "The layout has no people.", names=names)
    index = int(index or 0)
    new = current.set_identity(index, None if identity in (None, -1) else int(identity))
    message = f"This figure now shows {_identity_label(identity, names)}."
    return _view(new, message, None, index, names)


def button_edit(
    layout: Layout, action: str, person: int, num_identities: int = 1, names: list[str] | None = None
) -> tuple[Layout, str]:
    """One of the editor's buttons applied to `person`; returns the new layout and a status line."""
    if action == "add":
        return _add_figure(layout, num_identities, names)
    if not layout.people:
        return layout, "The layout has no people: add one or pick a template."
    who = figure_name(layout, person, names)
    nudges = {"left": (-NUDGE, 0), "right": (NUDGE, 0), "up": (0, -NUDGE), "down": (0, NUDGE)}
    if action in nudges:
        return layout.move(person, *nudges[action]), f"Moved {who} {action}."
    if action == "mirror":
        return layout.mirror(person), f"Mirrored {who}."
    if action in ("bigger", "smaller"):
        factor = SCALE_STEP if action == "bigger" else 1 / SCALE_STEP
        return layout.scale(person, factor), f"Made {who} {action}."
    if action == "remove":
        identity = layout.people[person].identity
        note = "" if identity is None else f": {who} is not in the photo until you press Add person"
        return layout.remove_person(person), f"Removed {who}{note}."
    raise ValueError(f"unknown layout action {action!r}")


def _add_figure(layout: Layout, num_identities: int, names: list[str] | None) -> tuple[Layout, str]:
    """A figure for the first person without one, else one showing nobody."""
    shown = {p.identity for p in layout.people}
    missing = [identity for identity in range(num_identities) if identity not in shown]
    new = layout.add_person()
    if missing:
        new.people[-1].identity = missing[0]
        return new, f"Added {_identity_label(missing[0], names)} in the middle."
    return new, "Added a figure in the middle; it shows nobody until you choose whose face it shows."


def new_count(layout: Layout) -> int:
    """How many identities the layout currently shows (highest assigned index + 1)."""
    assigned = [p.identity for p in layout.people if p.identity is not None]
    return max(assigned) + 1 if assigned else len(layout.people)


def figure_name(layout: Layout, index: int, names: list[str] | None = None) -> str:
    """What the editor calls figure `index`: the name of the person it shows (as on the canvas)."""
    return person_label(index, layout.people[index].identity, names) if 0 <= index < len(layout.people) else "nobody"


def _person_choices(layout: Layout, names: list[str] | None = None) -> list[tuple[str, int]]:
    return [(person_label(index, person.identity, names), index) for index, person in enumerate(layout.people)]


def _identity_choices(count: int, names: list[str] | None = None) -> list[tuple[str, int]]:
    return [("nobody", -1)] + [(_identity_label(index, names), index) for index in range(count)]


def _identity_label(identity, names: list[str] | None = None) -> str:
    if identity in (None, -1):
        return "nobody"
    identity = int(identity)
    return names[identity] if names and identity < len(names) and names[identity] else f"Person {identity + 1}"
