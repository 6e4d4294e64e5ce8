"""A message box that stays until dismissed, so a failed request keeps the last good result on screen.

Gradio's own error toast fades after a few seconds and marks every output of the event with an "Error" badge;
handlers that own results return `Alert.shown(message)` instead, and skip their other outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr


@dataclass
class Alert:
    box: gr.Row
    text: gr.Markdown

    @property
    def outputs(self) -> list:
        return [self.box, self.text]

    @staticmethod
    def shown(message: str) -> tuple:
        return gr.update(visible=True), f"⚠ {message}"

    @staticmethod
    def hidden() -> tuple:
        return gr.update(visible=False), ""


def create_alert(elem_id: str) -> Alert:
    """The box (hidden until a message comes) with its Dismiss button, inside the current Blocks context."""
    with gr.Row(visible=False, elem_id=elem_id, elem_classes="alert", equal_height=True) as box:
        text = gr.Markdown(elem_id=f"{elem_id}-text")
        dismiss = gr.Button("Dismiss", size="sm", scale=0, min_width=90, elem_id=f"{elem_id}-dismiss")
    alert = Alert(box, text)
    dismiss.click(Alert.hidden, None, alert.outputs, api_visibility="private", show_progress="hidden")
    return alert
