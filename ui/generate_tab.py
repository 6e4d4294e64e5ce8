"""The Generate tab: person cards, layout editor, prompt and settings, results with an identity check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import gradio as gr

from magicid.config import PAPER_GUIDANCE, PAPER_SMALL_FACE_PX, PAPER_STEPS, GenerationConfig, Limits
from ui.alerts import Alert, create_alert
from ui.events import PRIVATE
from ui.handlers import (
    DIIR_MODES,
    MAX_SEED,
    REPORT_HEADERS,
    GenerateOutputs,
    GenerateRequest,
    IdentityCard,
    Stopped,
    attempt,
)
from ui.layout_editor import LayoutEditor, LayoutFns, connect_names, create_layout_editor
from ui.presets import STYLE_PRESETS, parse_size


CARDS_PER_ROW = 3
PREVIEW_STEPS = 10


@dataclass
class GenerateTab:
    """The components other parts of the app (examples, parameter read-back) fill in."""

    num_people: gr.Slider
    names: list[gr.Textbox]  # each person card's name
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    style: gr.Dropdown
    seed: gr.Number
    randomize_seed: gr.Checkbox
    steps: gr.Slider
    guidance: gr.Slider
    id_scale: gr.Slider
    controlnet_scale: gr.Slider
    num_images: gr.Slider
    diir_mode: gr.Radio
    diir_threshold: gr.Slider
    editor: LayoutEditor
    gallery: gr.Gallery
    debug_gallery: gr.Gallery
    check: gr.AnnotatedImage
    report: gr.Dataframe
    messages: gr.Markdown
    alert: Alert
    generate: gr.Button
    preview: gr.Button
    stop: gr.Button
    fix_faces: gr.Button
    results: gr.State  # this session's latest GenerateOutputs (what "Fix failing faces" works on)


class StopRequests:
    """Sessions whose user pressed Stop: the running request's progress callback raises `Stopped` at the next step,
    so the work ends (and the GPU frees) there, not only the browser's wait."""

    def __init__(self):
        self._sessions: set[str] = set()

    def request(self, request: gr.Request) -> None:
        self._sessions.add(_session(request))

    def progress(self, request: gr.Request, progress, desc: str) -> Callable[[int, int], None]:
        session = _session(request)
        self._sessions.discard(session)

        def on_step(step: int, total: int) -> None:
            if session in self._sessions:
                self._sessions.discard(session)
                raise Stopped(f"Stopped at step {step} of {total}; the last result is kept")
            progress((step, total), desc=desc)

        return on_step


def create_generate_tab(
    generate_fn: Callable[[GenerateRequest, Callable[[int, int], None]], GenerateOutputs],
    fix_faces_fn: Callable[..., GenerateOutputs],
    encode_identity_fn: Callable[[list[str] | None, str], IdentityCard],
    rename_identity_fn: Callable,
    layout_fns: LayoutFns,
    limits: Limits,
    max_images: int = 4,
) -> GenerateTab:
    """Build the tab's widgets inside the current Blocks/Tab context and wire them to the given functions.
    `fix_faces_fn(previous, image_index, progress, only=None)`."""
    defaults = GenerationConfig()
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            gr.Markdown("### Who is in the photo")
            num_people = gr.Slider(1, limits.max_identities, value=1, step=1, label="Number of people", elem_id="num-people")
            cards, identities, names = _person_cards(encode_identity_fn, rename_identity_fn, limits)
            gr.Markdown("### Where they stand")
            editor = create_layout_editor(layout_fns, num_people, limits)
            connect_names(editor, names)
        with gr.Column(scale=4):
            gr.Markdown("### What the photo shows")
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder="two friends laughing at a café, golden hour", elem_id="prompt")
            style = gr.Dropdown(list(STYLE_PRESETS), value="Photo", label="Style")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="generate-button", scale=3)
                preview = gr.Button(f"Quick preview ({PREVIEW_STEPS} steps)", elem_id="preview-button", scale=2)
                stop = gr.Button("Stop", variant="stop", elem_id="stop-button", scale=1)
            with gr.Accordion("Settings", open=False):
                negative_prompt = gr.Textbox(defaults.negative_prompt, label="Negative prompt (what to avoid)", lines=2)
                with gr.Row():
                    seed = gr.Number(defaults.seed, label="Seed", precision=0, minimum=0, maximum=MAX_SEED)
                    randomize_seed = gr.Checkbox(True, label="New seed each time")
                steps = gr.Slider(1, 60, value=PAPER_STEPS, step=1, label="Steps", info="more: finer detail, slower", elem_id="steps")
                guidance = gr.Slider(1.0, 12.0, value=PAPER_GUIDANCE, step=0.5, label="Prompt strength",
                                     info="how closely the picture follows the prompt")  # fmt: skip
                id_scale = gr.Slider(0.0, 2.0, value=defaults.id_scale, step=0.05, label="Likeness strength",
                                     info="how strongly faces follow the uploaded photos")  # fmt: skip
                controlnet_scale = gr.Slider(0.0, 2.0, value=defaults.controlnet_scale, step=0.05, label="Pose strength",
                                             info="how closely people follow the poses on the canvas")  # fmt: skip
                # a slider needs min < max: with one image per request there is nothing to choose
                num_images = gr.Slider(1, max(max_images, 2), value=1, step=1, label="Number of images",
                                       visible=max_images > 1)  # fmt: skip
                diir_mode = gr.Radio(list(DIIR_MODES), value="auto", label="Redraw small faces",
                                     info="auto: when a face is smaller than the size below")  # fmt: skip
                diir_threshold = gr.Slider(32, 256, value=PAPER_SMALL_FACE_PX, step=4, label="Small face: under (px)")
            alert = create_alert("generate-alert")
            gallery = gr.Gallery(label="Results (each PNG keeps its settings)", format="png", columns=2, height=420,
                                 elem_id="results", buttons=["download", "fullscreen"])  # fmt: skip
            messages = gr.Markdown(elem_id="messages")
            check = gr.AnnotatedImage(label="Identity check: who was found where", elem_id="identity-check", height=360)
            with gr.Row():
                fix_one = [gr.Button(visible=False, size="sm", variant="stop", elem_id=f"fix-person-{i + 1}")
                           for i in range(limits.max_identities)]  # fmt: skip
                fix_faces = gr.Button("Fix every failing face", size="sm", elem_id="fix-faces-button")
            with gr.Accordion("Identity check in numbers", open=False):
                report = gr.Dataframe(
                    headers=REPORT_HEADERS, interactive=False, elem_id="report", wrap=True,
                    column_widths=["10%", "26%", "20%", "22%", "22%"],
                )  # fmt: skip
            with gr.Accordion("How it was made", open=False):
                debug_gallery = gr.Gallery(label="Pose and face conditions, masks, faces before/after redrawing",
                                           columns=4, height=260, elem_id="debug")  # fmt: skip

    settings = [prompt, negative_prompt, style, seed, randomize_seed, steps, guidance, id_scale, controlnet_scale]
    settings += [editor.size, num_images, diir_mode, diir_threshold]
    results = gr.State(None, time_to_live=limits.session_ttl_s)  # per session: the latest results, identities, layout
    selected = gr.State(0, time_to_live=limits.session_ttl_s)  # per session: the gallery image last clicked
    stops = StopRequests()
    result_views = [gallery, debug_gallery, report, messages, results, check, *fix_one]

    def on_generate(preview_only, count, layout, *values, request: gr.Request, progress=gr.Progress()):
        on_step = stops.progress(request, progress, "Generating")
        outputs, error = attempt(_generate, generate_fn, preview_only, count, layout, values, limits, on_step)
        if error:
            return *[gr.skip()] * (len(result_views) + 2), *Alert.shown(error)
        return (*_result_values(outputs, 0, len(fix_one)), outputs.seed, 0, *Alert.hidden())

    def on_fix_faces(previous, index, only=None, request: gr.Request = None, progress=gr.Progress()):  # noqa: B008
        on_step = stops.progress(request, progress, "Redrawing faces")
        outputs, error = attempt(fix_faces_fn, previous, index, on_step, only=only)
        if error:
            return *[gr.skip()] * (len(result_views) + 1), *Alert.shown(error)
        last = len(outputs.images) - 1
        return (*_result_values(outputs, last, len(fix_one)), last, *Alert.hidden())

    gpu = dict(concurrency_limit=1, concurrency_id="gpu", show_progress_on=[gallery], **PRIVATE)
    inputs = [num_people, editor.layout, *identities, *settings]
    outputs = [*result_views, seed, selected, *alert.outputs]
    def on_full(request: gr.Request, *values, progress=gr.Progress()):
        return on_generate(False, *values, request=request, progress=progress)

    def on_preview(request: gr.Request, *values, progress=gr.Progress()):
        return on_generate(True, *values, request=request, progress=progress)

    generate.click(on_full, inputs, outputs, **gpu)
    preview.click(on_preview, inputs, outputs, **gpu)
    stop.click(stops.request, None, None, show_progress="hidden", **PRIVATE)
    fix_outputs = [*result_views, selected, *alert.outputs]
    fix_faces.click(on_fix_faces, [results, selected], fix_outputs, **gpu)
    def fix_one_face(identity: int):
        def on_fix_one(previous, index, request: gr.Request, progress=gr.Progress()):
            return on_fix_faces(previous, index, [identity], request, progress)

        return on_fix_one

    for identity, button in enumerate(fix_one):
        button.click(fix_one_face(identity), [results, selected], fix_outputs, **gpu)
    def on_select(outputs, evt: gr.SelectData):
        return _on_select(len(fix_one), outputs, evt)

    gallery.select(on_select, results, [selected, check, *fix_one], **PRIVATE)
    num_people.change(lambda count: [gr.update(visible=i < count) for i in range(len(cards))], num_people, cards, **PRIVATE)
    return GenerateTab(
        num_people, names, prompt, negative_prompt, style, seed, randomize_seed, steps, guidance, id_scale,
        controlnet_scale, num_images, diir_mode, diir_threshold, editor, gallery, debug_gallery, check, report,
        messages, alert, generate, preview, stop, fix_faces, results,
    )  # fmt: skip


def _generate(generate_fn, preview_only: bool, count, layout, values, limits: Limits, on_step) -> GenerateOutputs:
    request = _request(count, layout, values[: limits.max_identities], values[limits.max_identities :])
    if preview_only:
        request = replace(request, steps=min(request.steps, PREVIEW_STEPS), num_images=1, diir_mode="off")
    return generate_fn(request, on_step)


def _result_values(outputs: GenerateOutputs, index: int, slots: int) -> tuple:
    """Values for the results gallery, debug gallery, identity table, messages, the session's results state,
    the identity check of image `index` and its per-person fix buttons."""
    captions = [f"Image {number}" for number in range(1, len(outputs.files) + 1)]
    gallery = list(zip(outputs.files, captions)) if outputs.files else outputs.images
    views = _check_views(outputs, index, slots)
    return (gallery, outputs.debug_images, outputs.report_rows, outputs.messages, outputs, *views)


def _check_views(outputs: GenerateOutputs | None, index: int, slots: int) -> tuple:
    """The identity check drawn on image `index`, and per person slot its "Fix <name>" button (shown if failing)."""
    buttons = [gr.update(visible=False)] * slots
    if outputs is None or not outputs.checks:
        return gr.skip(), *buttons
    check = outputs.checks[min(max(index, 0), len(outputs.checks) - 1)]
    for face in check.failing:
        buttons[face.identity] = gr.update(visible=True, value=f"Fix {face.name}'s face")
    return gr.update(value=check.annotated(), color_map=check.color_map()), *buttons


def _on_select(slots: int, outputs: GenerateOutputs | None, evt: gr.SelectData) -> tuple:
    index = int(evt.index or 0)
    return index, *_check_views(outputs, index, slots)


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def _person_cards(encode_identity_fn, rename_identity_fn, limits: Limits) -> tuple[list[gr.Column], list[gr.State], list]:
    """The cards, each card's identity state and each card's name box."""
    cards, states, names, count = [], [], [], limits.max_identities
    for start in range(0, count, CARDS_PER_ROW):
        with gr.Row():
            for index in range(start, min(start + CARDS_PER_ROW, count)):
                card, state, name = _person_card(index, encode_identity_fn, rename_identity_fn, limits.session_ttl_s)
                cards.append(card)
                states.append(state)
                names.append(name)
    return cards, states, names


def _person_card(index: int, encode_identity_fn, rename_identity_fn, ttl_s: float) -> tuple[gr.Column, gr.State, gr.Textbox]:
    with gr.Column(visible=index == 0, variant="panel", min_width=180, elem_classes="person-card") as card:
        name = gr.Textbox(f"Person {index + 1}", label=f"Person {index + 1}", max_lines=1, elem_id=f"person-{index + 1}-name")
        photos = gr.Gallery(
            label="Photos of this person (one or more)", file_types=["image"], type="filepath", interactive=True,
            columns=4, height=150, object_fit="cover", elem_id=f"person-{index + 1}-photos",
        )  # fmt: skip
        thumbnail = gr.Image(label="The face MagicID will use", interactive=False, height=112, buttons=[])
        status = gr.Markdown("Upload one or more photos of this person.", elem_id=f"person-{index + 1}-status")
    state = gr.State(None, time_to_live=ttl_s)  # this session's Identity for the card; never shared between sessions

    def on_photos(files, current_name):
        card_value = encode_identity_fn(files, current_name)
        if card_value.identity is None and files:
            gr.Warning(card_value.status.lstrip("⚠ "))
        return card_value.identity, card_value.thumbnail, card_value.status

    photos.change(on_photos, [photos, name], [state, thumbnail, status], concurrency_limit=1, concurrency_id="gpu", **PRIVATE)
    name.blur(rename_identity_fn, [state, name], state, **PRIVATE)
    return card, state, name


def _request(count, layout, identities, values) -> GenerateRequest:
    prompt, negative, style, seed, randomize, steps, guidance, id_scale, cn_scale, size, num_images, mode, threshold = values
    width, height = parse_size(size)
    return GenerateRequest(
        identities=list(identities[: int(count)]), layout=layout, prompt=prompt or "", negative_prompt=negative or "",
        style=style, seed=int(seed or 0), randomize_seed=bool(randomize), steps=int(steps), guidance_scale=float(guidance),
        id_scale=float(id_scale), controlnet_scale=float(cn_scale), width=width, height=height, num_images=int(num_images),
        diir_mode=mode, diir_threshold_px=int(threshold),
    )  # fmt: skip
