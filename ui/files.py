"""Files the app hands to the browser (layout JSON downloads).

They are written inside Gradio's cache folder, so Gradio serves them without copying, tracks them, and its
`delete_cache` setting removes them; each goes into its own random folder, so no session can guess another's.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from gradio.utils import get_upload_folder


def session_file(name: str) -> Path:
    """A fresh path `<gradio cache>/magicid/<random>/<name>` whose folder exists."""
    folder = Path(get_upload_folder()) / "magicid" / uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    return folder / Path(name).name
