"""Files the app hands to the browser (layout JSON downloads).

They are written inside Gradio's cache folder, so Gradio serves them without copying, tracks them, and its
`delete_cache` setting removes them; each goes into its own random folder, so no session can guess another's.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from gradio.utils import get_upload_folder


def session_file(name: str) -> Path:
    """A fresh path `<gradio cache>/magicid/<random>/<name>` whose folder exists."""
    folder = Path(get_upload_folder()) / "magicid" / uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    return folder / Path(name).name


def sweep_stale_uploads(max_age_s: float, folder: str | Path | None = None) -> int:
    """Delete files older than `max_age_s` under Gradio's cache folder (uploads that outlived a crashed server,
    whose own `delete_cache` never ran); returns how many were deleted. Empty folders go too."""
    root = Path(folder or get_upload_folder())
    if not root.is_dir():
        return 0
    cutoff, deleted = time.time() - max_age_s, 0
    for path in sorted(root.rglob("*"), key=lambda item: len(item.parts), reverse=True):
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        except OSError:  # another instance removed it first, or it is not ours to delete
            continue
    return deleted
