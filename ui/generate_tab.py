"""The Generate tab: person cards, layout editor, prompt and settings, results with an identity check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from magicid.config import PAPER_GUIDANCE, PAPER_SMALL_FACE_PX, PAPER_STEPS, GenerationConfig, Limits
from ui.events import PRIVATE
from ui.handlers import (
    DIIR_MODES,
    MAX_SEED,
    REPORT_HEADERS,
    GenerateOutputs,
    GenerateRequest,
    IdentityCard,
    user_errors,
)
from ui.layout_editor import LayoutEditor, LayoutFns, connect_names, create_layout_editor
from ui.presets import STYLE_PRESETS, parse_size


CARDS_PER_ROW = 3


@dataclass
class GenerateTab:
    """The components other parts of the app (examples, parameter read-back) fill in."""

    num_people: gr.Slider
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
    report: gr.Dataframe
    messages: gr.Markdown
    generate: gr.Button
    fix_faces: gr.Button
    results: gr.State  # this session's latest GenerateOutputs (what "Fix failing faces" works on)


def create_generate_tab(
    generate_fn: Callable[[GenerateRequest, Callable[[int, int], None]], GenerateOutputs],
    fix_faces_fn: Callable[[GenerateOutputs | None, int | None, Callable[[int, int], None]], GenerateOutputs],
    encode_identity_fn: Callable[[list[str] | None, str], IdentityCard],
    rename_identity_fn: Callable,
    layout_fns: LayoutFns,
    limits: Limits,
    max_images: int = 4,
) -> GenerateTab:
    """Build the tab's widgets inside the current Blocks/Tab context and wire them to the given functions."""
    defaults = GenerationConfig()
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            gr.Markdown("### 1 · Who is in the photo")
            num_people = gr.Slider(1, limits.max_identities, value=1, step=1, label="Number of people", elem_id="num-people")
            cards, identities, names = _person_cards(encode_identity_fn, rename_identity_fn, limits)
            gr.Markdown("### 2 · Where they stand")
            editor = create_layout_editor(layout_fns, num_people, limits)
            connect_names(editor, names)
        with gr.Column(scale=4):
            gr.Markdown("### 3 · What the photo shows")
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder="two friends laughing at a café, golden hour", elem_id="prompt")
            style = gr.Dropdown(list(STYLE_PRESETS), value="Photo", label="Style")
            generate = gr.Button("Generate", variant="primary", elem_id="generate-button")
            with gr.Accordion("Settings", open=False):
                negative_prompt = gr.Textbox(defaults.negative_prompt, label="Negative prompt", lines=2)
                with gr.Row():
                    seed = gr.Number(defaults.seed, label="Seed", precision=0, minimum=0, maximum=MAX_SEED)
                    randomize_seed = gr.Checkbox(True, label="Randomise seed")
                steps = gr.Slider(1, 60, value=PAPER_STEPS, step=1, label="Steps", elem_id="steps")
                guidance = gr.Slider(1.0, 12.0, value=PAPER_GUIDANCE, step=0.5, label="Guidance (CFG)")
                id_scale = gr.Slider(0.0, 2.0, value=defaults.id_scale, step=0.05, label="ID strength")
                controlnet_scale = gr.Slider(0.0, 2.0, value=defaults.controlnet_scale, step=0.05, label="Pose (ControlNet) strength")
                # a slider needs min < max: with one image per request there is nothing to choose
                num_images = gr.Slider(1, max(max_images, 2), value=1, step=1, label="Number of images",
                                       visible=max_images > 1)  # fmt: skip
                diir_mode = gr.Radio(list(DIIR_MODES), value="auto", label="Small-face restoration (DIIR)", info="auto: on when faces are small")
                diir_threshold = gr.Slider(32, 256, value=PAPER_SMALL_FACE_PX, step=4, label="Restore faces smaller than (px)")
            gallery = gr.Gallery(label="Results (PNG downloads carry their settings)", format="png", columns=2, height=420, elem_id="results", buttons=["download", "fullscreen"])
            fix_faces = gr.Button("Fix failing faces (DIIR)", size="sm", elem_id="fix-faces-button")
            messages = gr.Markdown(elem_id="messages")
            report = gr.Dataframe(
                headers=REPORT_HEADERS, label="Identity check (FaceSim per person)", interactive=False, elem_id="report",
                column_widths=["10%", "26%", "20%", "22%", "22%"], wrap=True,
            )
            with gr.Accordion("How it was made (debug)", open=True):
                debug_gallery = gr.Gallery(label="Conditions, masks, faces before/after DIIR", columns=4, height=260, elem_id="debug")

    settings = [prompt, negative_prompt, style, seed, randomize_seed, steps, guidance, id_scale, controlnet_scale]
    settings += [editor.size, num_images, diir_mode, diir_threshold]
    results = gr.State(None, time_to_live=limits.session_ttl_s)  # per session: the latest results, identities, layout
    selected = gr.State(0, time_to_live=limits.session_ttl_s)  # per session: the gallery image last clicked

    def on_generate(count, layout, *values, progress=gr.Progress()):
        request = _request(count, layout, values[: limits.max_identities], values[limits.max_identities :])
        with user_errors():
            outputs = generate_fn(request, lambda step, total: progress((step, total), desc="Generating"))
        return (*_result_values(outputs), outputs.seed, 0)

    def on_fix_faces(previous, index, progress=gr.Progress()):
        with user_errors():
            outputs = fix_faces_fn(previous, index, lambda step, total: progress((step, total), desc="Fixing faces"))
        return _result_values(outputs)

    result_views = [gallery, debug_gallery, report, messages, results]
    generate.click(
        on_generate, [num_people, editor.layout, *identities, *settings], [*result_views, seed, selected],
        concurrency_limit=1, concurrency_id="gpu", **PRIVATE,
    )  # fmt: skip
    fix_faces.click(on_fix_faces, [results, selected], result_views, concurrency_limit=1, concurrency_id="gpu", **PRIVATE)
    gallery.select(_selected_index, None, selected, **PRIVATE)
    num_people.change(lambda count: [gr.update(visible=i < count) for i in range(len(cards))], num_people, cards, **PRIVATE)
    return GenerateTab(
        num_people, prompt, negative_prompt, style, seed, randomize_seed, steps, guidance, id_scale, controlnet_scale,
        num_images, diir_mode, diir_threshold, editor, gallery, debug_gallery, report, messages, generate, fix_faces,
        results,
    )  # fmt: skip


def _result_values(outputs: GenerateOutputs) -> tuple:
    """Values for the results gallery, debug gallery, identity table, messages and the session's results state."""
    return outputs.images, outputs.debug_images, outputs.report_rows, outputs.messages, outputs


def _selected_index(evt: gr.SelectData) -> int:
    return int(evt.index or 0)


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
        photos = gr.File(
            label="Photos of this person", file_count="multiple", file_types=["image"],
            elem_id=f"person-{index + 1}-photos",
        )  # fmt: skip
        thumbnail = gr.Image(label="Detected face", interactive=False, height=112, show_label=False, buttons=[])
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
