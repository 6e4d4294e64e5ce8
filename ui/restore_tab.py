"""The Restore tab: any image + reference photos -> DIIR identity restoration of its small faces, before/after."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from magicid.config import DIIRConfig
from ui.alerts import Alert, create_alert
from ui.handlers import RestoreOutputs, attempt, user_errors


def create_restore_tab(restore_fn: Callable[..., RestoreOutputs]) -> dict[str, gr.components.Component]:
    """Build the tab inside the current Blocks/Tab context; `restore_fn(image, references, config, progress, who=)`."""
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
            who = gr.Textbox(
                label="Who is each face (optional)", value="", placeholder="e.g. 2, off, 1", max_length=400, elem_id="restore-who",
                info="Per small face, largest first (the messages number them): a reference photo's number, or off "
                "to leave that face as it is. Empty: each reference restores the face most like it.",
            )  # fmt: skip
            run = gr.Button("Restore faces", variant="primary", elem_id="restore-button")
        with gr.Column():
            alert = create_alert("restore-alert")
            comparison = gr.ImageSlider(label="Before / after", type="pil", format="png", elem_id="restore-result")
            messages = gr.Markdown(elem_id="restore-messages")
            debug = gr.Gallery(label="Faces: crop, mask, before, after", columns=4, height=220, elem_id="restore-debug")

    def restored_views(path, files, threshold_px, step_count, strength, seed_value, who_is_who, progress):
        config = DIIRConfig(threshold_px=int(threshold_px), steps=int(step_count), id_scale=float(strength), seed=int(seed_value or 0))
        def report(step, total):
            progress((step, total), desc="Restoring")

        result = restore_fn(path, files, config, report, who=who_is_who or "")
        return (result.before, result.after), result.debug_images, result.messages or "Done."

    def on_restore(*values, progress=gr.Progress()):
        """For a person: a failure stays in the alert above the last result."""
        views, error = attempt(restored_views, *values, progress)
        return (*[gr.skip()] * 3, *Alert.shown(error)) if error else (*views, *Alert.hidden())

    def api_restore(*values, progress=gr.Progress()):
        """For API clients (`/restore`): the three results, or the one-line error."""
        with user_errors():
            return restored_views(*values, progress)

    inputs = [image, references, threshold, steps, id_scale, seed, who]
    gpu = dict(concurrency_limit=1, concurrency_id="gpu")
    run.click(on_restore, inputs, [comparison, debug, messages, *alert.outputs], show_progress_on=[comparison],
              api_visibility="private", **gpu)  # fmt: skip
    api = gr.Button(visible=False)  # the public endpoint, with the outputs API clients expect
    api.click(api_restore, inputs, [comparison, debug, messages], api_name="restore", **gpu)
    return {"image": image, "references": references, "comparison": comparison, "debug": debug, "messages": messages}
