"""MagicID web app (Gradio; Hugging Face Spaces entry point). Composition only: settings, engine, widgets, queue.

Environment:
    MAGICID_PROFILE       mini | tiny | hub | magicid (default: hub on a Space or when its weights are cached, else mini);
                          MAGICID_* overrides weights
    MAGICID_MAX_IMAGES    images per request (default 4)
    MAGICID_QUEUE_SIZE    requests waiting at most; later ones are told the app is busy (default 16)
    MAGICID_SESSION_TTL   seconds a session's photos and results are kept after its last use (default 3600)
    MAGICID_MAX_SESSIONS  sessions kept in memory at once, the oldest dropped first (default 200)
    GRADIO_SERVER_NAME / GRADIO_SERVER_PORT   where to listen (Gradio's own variables)
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import gradio as gr

from magicid.config import Limits, ProfileConfig, default_profile_name
from ui.blocks import CSS, AppSettings, build_app
from ui.files import sweep_stale_uploads
from ui.handlers import AppHandlers


try:  # ZeroGPU on Hugging Face Spaces; the decorator is effect-free elsewhere, and the package is optional
    import spaces
except ImportError:
    spaces = None

GENERATE_GPU_SECONDS = 120
RESTORE_GPU_SECONDS = 90
UPLOAD_MAX_AGE_S = 7200  # the footer promises uploads are deleted within two hours


@dataclass
class Settings:
    profile: str = "tiny"
    max_images: int = 4
    queue_size: int = 16
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls) -> Settings:
        limits = Limits(
            session_ttl_s=float(os.environ.get("MAGICID_SESSION_TTL", Limits.session_ttl_s)),
            max_sessions=int(os.environ.get("MAGICID_MAX_SESSIONS", Limits.max_sessions)),
        )
        return cls(
            profile=default_profile_name(),
            max_images=int(os.environ.get("MAGICID_MAX_IMAGES", os.environ.get("MAX_IMAGES", 4))),
            queue_size=int(os.environ.get("MAGICID_QUEUE_SIZE", 16)),
            limits=limits,
        )


def on_gpu(function, seconds: int):
    """`function` under `@spaces.GPU(duration=seconds)` when the `spaces` package is installed."""
    return spaces.GPU(duration=seconds)(function) if spaces is not None else function


def create_app(engine, settings: Settings | None = None) -> gr.Blocks:
    """The app over `engine` (a `magicid.engine.MagicID` or anything with its interface). Only the handlers that
    run the diffusion models hold a GPU; identity encoding (face detection and embedding) runs on the CPU."""
    settings = settings or Settings()
    handlers = AppHandlers(engine, settings.limits)
    handlers.generate = on_gpu(handlers.generate, GENERATE_GPU_SECONDS)
    handlers.restore = on_gpu(handlers.restore, RESTORE_GPU_SECONDS)
    handlers.fix_faces = on_gpu(handlers.fix_faces, RESTORE_GPU_SECONDS)
    app_settings = AppSettings(max_images=settings.max_images, limits=settings.limits, download_status=download_line)
    return build_app(handlers, engine.banner(), engine.is_miniature, app_settings)


def download_line() -> str:
    from magicid.downloads import STATUS

    return STATUS.line()


def load_in_background(engine) -> threading.Thread:
    """Start loading (and on a first hub run, downloading) the models now, so the page can show the download and
    the first click does not start it. A failure is printed here and said again to whoever generates."""
    from magicid.errors import MagicIDError

    def load():
        try:
            engine.preload()
        except MagicIDError as error:
            print(f"MagicID: {error}")

    thread = threading.Thread(target=load, name="magicid-preload", daemon=True)
    thread.start()
    return thread


def launch_options(settings: Settings) -> dict:
    """`launch()` keywords: the upload size limit (pixel limits are checked when images are read), how many sessions
    are kept in memory. `show_error` is off: users see only `gr.Error` lines (`ui.handlers.user_errors`), never the
    text of an unexpected exception, which may quote input or name server paths."""
    return {
        "max_file_size": settings.limits.max_upload_bytes, "show_error": False, "css": CSS, "theme": gr.themes.Soft(),
        "state_session_capacity": settings.limits.max_sessions,
    }  # fmt: skip


def main() -> None:
    from magicid.engine import MagicID

    settings = Settings.from_env()
    sweep_stale_uploads(max_age_s=UPLOAD_MAX_AGE_S)  # what a crashed instance left behind
    engine = MagicID.from_profile(ProfileConfig.from_env(settings.profile))
    print(f"MagicID: the {settings.profile} profile (MAGICID_PROFILE chooses; default: hub when its weights are cached)")
    if spaces is not None:
        # ZeroGPU forks a worker per GPU call: models loaded there would load again for every handler and worker.
        # Loaded here, in the main process, onto "cuda" (which ZeroGPU emulates until a call holds the GPU).
        print("MagicID: loading the models at start-up (ZeroGPU)")
        engine.preload()
    elif settings.profile == "hub":
        load_in_background(engine)
    demo = create_app(engine, settings)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1).launch(**launch_options(settings))


if __name__ == "__main__":
    main()
