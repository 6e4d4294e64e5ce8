"""The whole app's Blocks: banner, Generate tab, Restore tab, examples, parameter read-back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from magicid.config import Limits
from magicid.layout import Layout
from ui.drag_canvas import canvas_html
from ui.events import PRIVATE
from ui.generate_tab import GenerateTab, create_generate_tab
from ui.handlers import AppHandlers, attempt, controls_from_parameters
from ui.layout_editor import LayoutFns
from ui.presets import size_label
from ui.restore_tab import create_restore_tab


EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
CSS = """
#banner {border-left: 6px solid var(--color-accent); padding: 6px 14px; background: var(--block-background-fill);
  border-radius: 6px;}
#banner.tiny {border-left-color: #e8a317; background: rgba(232, 163, 23, 0.12);}
.person-card {min-width: 180px;}
"""
EXAMPLES = [  # prompt, style, layout file in assets/examples/layouts (its people set the number of people)
    ["a woman smiling in a sunlit park, upper body", "Photo", "portrait-half-body.json"],
    ["two friends laughing at a café terrace, golden hour", "Film", "friends-standing.json"],
    ["a family of four on a beach at sunset, full body", "Cinematic", "family-full-body.json"],
    ["three colleagues sitting on a sofa in a bright office", "Studio portrait", "colleagues-sitting.json"],
    ["a couple waving at the camera in the snow", "Watercolor", "couple-waving.json"],
]


@dataclass
class AppSettings:
    """What the composition root decides; `app.py` reads it from the environment."""

    max_images: int = 4
    limits: Limits | None = None
    download_status: Callable[[], str] | None = None  # a line while the models download ('' when not)


def build_app(handlers: AppHandlers, banner: str, is_miniature: bool, settings: AppSettings | None = None) -> gr.Blocks:
    """The app over `handlers` (whose GPU-bound methods `app.py` may have wrapped). Loads no model."""
    settings = settings or AppSettings()
    limits = settings.limits or handlers.limits
    with gr.Blocks(title="MagicID · photos of your people", delete_cache=(3600, 3600), analytics_enabled=False) as demo:
        gr.Markdown("# MagicID\nPhotos of **specific people**, alone or together, placed where you want them.")
        gr.Markdown(_banner_text(banner, is_miniature), elem_id="banner", elem_classes=["tiny"] if is_miniature else [])
        if settings.download_status is not None:
            _download_line(demo, settings.download_status)
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                layout_fns = LayoutFns(handlers.template_layout, handlers.photo_layout, handlers.layout_from_file)
                tab = create_generate_tab(
                    handlers.generate, handlers.fix_faces, handlers.encode_identity, handlers.rename_identity, layout_fns,
                    limits, max_images=settings.max_images,
                )  # fmt: skip
                _examples(tab, limits)
                _parameter_reader(tab, handlers, limits)
            with gr.Tab("Restore faces", id="restore"):
                create_restore_tab(handlers.restore)
        gr.Markdown(
            "Each PNG you download keeps its settings: drop it into *Reuse settings from a PNG* to make it again. "
            "Your photos are only used for your own requests and are deleted from the server within two hours."
        )
    return demo


DOWNLOAD_POLL_S = 2.0


def _download_line(demo: gr.Blocks, status: Callable[[], str]) -> None:
    """A line under the banner while the weights download; polling stops once nothing is downloading."""
    line = gr.Markdown(visible=False, elem_id="download-status")
    timer = gr.Timer(DOWNLOAD_POLL_S, active=False)

    def poll():
        text = status()
        return gr.update(value=text, visible=bool(text)), gr.Timer(active=bool(text))

    for event in (demo.load, timer.tick):
        event(poll, outputs=[line, timer], show_progress="hidden", **PRIVATE)


def _banner_text(banner: str, is_miniature: bool) -> str:
    text = f"**Model** · {banner}"
    if is_miniature:
        text += (
            "\n\nFor photographs, this app needs real model weights (Stable Diffusion 1.5 with ControlNet and "
            "IP-Adapter-FaceID, or trained MagicID weights) on a GPU: whoever runs it can switch, as its README says."
        )
    return text


def example_layouts(folder: Path = EXAMPLES_DIR / "layouts") -> dict[str, Layout]:
    """The example layouts, read once when the app is built: requests pick one by name from this fixed set."""
    return {row[2]: Layout.read(folder / row[2]) for row in EXAMPLES if (folder / row[2]).is_file()}


def _examples(tab: GenerateTab, limits: Limits) -> None:
    layouts = example_layouts()
    # which example layout to load; a Dropdown only takes its own choices, and the handler looks names up
    layout_name = gr.Dropdown(list(layouts), value=None, label="Layout", visible=False)

    def load_example_layout(name: str | None, names: list[str]):
        if name not in layouts:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        layout = layouts[name]
        size = (layout.width, layout.height)
        size_update = size_label(*size) if size in limits.size_choices else gr.skip()
        return layout, canvas_html(layout, names=names), len(layout.people), size_update

    gr.Examples(
        examples=[row for row in EXAMPLES if row[2] in layouts],
        inputs=[tab.prompt, tab.style, layout_name], label="Examples (then upload a photo per person)",
    )  # fmt: skip
    # the number of people follows the layout; its change event then assigns identities left to right
    layout_name.change(
        load_example_layout, [layout_name, tab.editor.names],
        [tab.editor.layout, tab.editor.canvas, tab.num_people, tab.editor.size], **PRIVATE,
    )  # fmt: skip


def _parameter_reader(tab: GenerateTab, handlers: AppHandlers, limits: Limits) -> None:
    with gr.Accordion("Reuse settings from a PNG", open=False):
        png = gr.File(label="Drop a PNG made by MagicID", file_types=[".png"], elem_id="parameters-png")
        summary = gr.Markdown(elem_id="parameters-summary")
    controls = {
        "prompt": tab.prompt, "negative_prompt": tab.negative_prompt, "style": tab.style, "seed": tab.seed,
        "steps": tab.steps, "guidance_scale": tab.guidance, "id_scale": tab.id_scale,
        "controlnet_scale": tab.controlnet_scale, "num_images": tab.num_images, "diir_mode": tab.diir_mode,
        "diir_threshold_px": tab.diir_threshold,
    }  # fmt: skip
    people = [tab.num_people, *tab.names]
    outputs = [*controls.values(), tab.randomize_seed, tab.editor.size, tab.editor.layout, tab.editor.canvas, *people, summary]

    def on_png(path, names):
        if not path:
            return [gr.skip()] * len(outputs)
        values, error = attempt(lambda: controls_from_parameters(handlers.read_parameters(path)))
        if error:
            return [*[gr.skip()] * (len(outputs) - 1), f"⚠ {error}"]
        updates = [values[name] if name in values else gr.skip() for name in controls]
        size = values.get("size")
        size_update = size_label(*size) if size in limits.size_choices else gr.skip()
        layout = values.get("layout")
        layout_updates = [layout, canvas_html(layout, names=names)] if layout is not None else [gr.skip(), gr.skip()]
        cast = values.get("names", [])[: limits.max_identities]
        people_updates = [len(cast) or gr.skip(), *cast, *[gr.skip()] * (len(tab.names) - len(cast))]
        who = f" with {', '.join(cast)}" if cast else ""
        note = f"Settings restored (seed {values.get('seed', '?')}){who}. Upload the same people's photos, then Generate."
        return [*updates, False, size_update, *layout_updates, *people_updates, note]

    png.upload(on_png, [png, tab.editor.names], outputs, **PRIVATE)
