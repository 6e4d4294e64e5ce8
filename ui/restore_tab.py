"""The Restore tab: any image + reference photos -> DIIR identity restoration of its small faces, before/after."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from magicid.config import DIIRConfig
from ui.handlers import RestoreOutputs, user_errors


def create_restore_tab(restore_fn: Callable[..., RestoreOutputs]) -> dict[str, gr.components.Component]:
    """Build the tab inside the current Blocks/Tab context; `restore_fn(image, references, config, progress)`."""
    defaults = DIIRConfig()
    gr.Markdown(
        "Fix the faces of **any** image (a group photo from any generator, a video frame, ...): upload it and one "
        "reference photo **per person**. Each face below the size threshold is inverted, re-denoised with its "
        "identity and blended back (DIIR, Alg. 2 of the paper). Each reference restores the face that resembles it "
        "most, if it resembles it enough; faces of other people are left as they are, and the messages say which."
    )
    with gr.Row(equal_height=False):
        with gr.Column():
            image = gr.File(label="Image to restore", file_types=["image"], height=120, elem_id="restore-image")
            references = gr.File(label="Reference photos (one per person)", file_count="multiple", file_types=["image"], elem_id="restore-references")
            with gr.Accordion("Settings", open=True):
                threshold = gr.Slider(32, 512, value=defaults.threshold_px, step=4, label="Restore faces smaller than (px)")
                steps = gr.Slider(2, 60, value=defaults.steps, step=1, label="Inversion / denoising steps", elem_id="restore-steps")
                id_scale = gr.Slider(0.0, 2.0, value=defaults.id_scale, step=0.05, label="ID strength")
                seed = gr.Number(defaults.seed, label="Seed", precision=0, minimum=0)
            run = gr.Button("Restore faces", variant="primary", elem_id="restore-button")
        with gr.Column():
            comparison = gr.ImageSlider(label="Before / after", type="pil", format="png", elem_id="restore-result")
            messages = gr.Markdown(elem_id="restore-messages")
            debug = gr.Gallery(label="Faces: crop, mask, before, after", columns=4, height=220, elem_id="restore-debug")

    def on_restore(path, files, threshold_px, step_count, strength, seed_value, progress=gr.Progress()):
        with user_errors():
            config = DIIRConfig(threshold_px=int(threshold_px), steps=int(step_count), id_scale=float(strength), seed=int(seed_value or 0))
            result = restore_fn(path, files, config, lambda step, total: progress((step, total), desc="Restoring"))
        return (result.before, result.after), result.debug_images, result.messages or "Done."

    run.click(
        on_restore, [image, references, threshold, steps, id_scale, seed], [comparison, debug, messages],
        concurrency_limit=1, concurrency_id="gpu", api_name="restore",
    )  # fmt: skip
    return {"image": image, "references": references, "comparison": comparison, "debug": debug, "messages": messages}
