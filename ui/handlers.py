"""Adapters between the engine (`magicid.engine.MagicID` or anything with its interface) and widget values.

Handlers take and return plain values (paths, PIL images, lists, dataclasses); the tabs turn them into
component updates. Errors the user caused stay `MagicIDError` here; `user_errors()` turns them into `gr.Error`.
No torch and no model code is imported: the engine loads its models lazily on first use.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from magicid.config import DIIRConfig, GenerationConfig, Limits
from magicid.errors import InvalidImageError, LayoutError, MagicIDError
from magicid.imageio import load_image
from magicid.layout import MAX_LAYOUT_BYTES, Layout
from ui.files import session_file
from ui.identity_check import ImageCheck, image_checks
from ui.presets import apply_style


logger = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
MAX_SEED = 2**31 - 1
REPORT_HEADERS = ["image", "person", "likeness (FaceSim)", "in place (IoU with their spot)", "status"]
DIIR_MODES = ("auto", "on", "off")


@dataclass
class IdentityCard:
    """What one person card shows after its photos were read."""

    identity: Any | None  # magicid.identity.Identity
    thumbnail: Image.Image | None
    status: str  # markdown


@dataclass
class GenerateRequest:
    """Everything the Generate tab sends, already parsed from widget values."""

    identities: list[Any | None]  # one entry per person card in use; None = no photo yet
    layout: Any | None  # magicid.layout.Layout
    prompt: str
    negative_prompt: str = ""
    style: str = "None"
    seed: int = 0
    randomize_seed: bool = False
    steps: int = GenerationConfig.steps
    guidance_scale: float = GenerationConfig.guidance_scale
    id_scale: float = GenerationConfig.id_scale
    controlnet_scale: float = GenerationConfig.controlnet_scale
    width: int = GenerationConfig.width
    height: int = GenerationConfig.height
    num_images: int = GenerationConfig.num_images
    diir_mode: str = "auto"
    diir_threshold_px: int = GenerationConfig.restore_threshold_px


@dataclass
class GenerateOutputs:
    """A generation's results; the tab keeps the latest in a per-session `gr.State` so its faces can be fixed."""

    images: list[Image.Image]  # PNG-backed images whose text chunk "magicid" holds the parameters
    debug_images: list[tuple[Image.Image, str]]
    report_rows: list[list[Any]]
    messages: str  # markdown
    seed: int
    parameters: dict = field(default_factory=dict)
    identities: list = field(default_factory=list)  # the Identity objects generated from
    layout: Any | None = None  # the Layout generated from (at the generation size)
    names: list[str] = field(default_factory=list)  # display name per identity
    checks: list[ImageCheck] = field(default_factory=list)  # per image: the identity check, drawn on it
    files: list[str] = field(default_factory=list)  # per image: its PNG, named for download


@dataclass
class RestoreOutputs:
    before: Image.Image
    after: Image.Image
    debug_images: list[tuple[Image.Image, str]]
    messages: str


class Stopped(MagicIDError):
    """The user pressed Stop: the request ends at the next denoising step."""


UNEXPECTED = "Something went wrong on the server (it was logged): try again, or with other input"


def user_message(error: Exception) -> str:
    """The one line a user sees for `error`: a `MagicIDError`'s own message; any other exception is a bug, whose
    traceback goes to the server log while the user gets a generic line that quotes nothing of it."""
    if isinstance(error, (MagicIDError, gr.Error)):
        return str(error.message if isinstance(error, gr.Error) else error)
    logger.error("unexpected error in a request", exc_info=error)
    return UNEXPECTED


def attempt(fn: Callable, *args, **kwargs) -> tuple[Any, str | None]:
    """`(fn(*args), None)`, or `(None, the user's one-line message)` when it raised."""
    try:
        return fn(*args, **kwargs), None
    except Exception as error:  # noqa: BLE001 - every failure becomes one line; bugs are logged by user_message
        return None, user_message(error)


@contextmanager
def user_errors() -> Iterator[None]:
    """Show failures as a Gradio error toast carrying `user_message`'s one line."""
    try:
        yield
    except gr.Error:
        raise
    except Exception as error:
        raise gr.Error(user_message(error), print_exception=False) from error


class AppHandlers:
    """The app's operations on one engine. Stateless: per-user data travels in the caller's `gr.State`s."""

    def __init__(self, engine, limits: Limits | None = None):
        self.engine = engine
        self.limits = limits or Limits()

    # identities -------------------------------------------------------------------------------------------
    def encode_identity(self, files: list[str] | None, name: str = "") -> IdentityCard:
        """Read a card's photos; a bad photo or a photo without a face gives a card with the reason, not an error."""
        if not files:
            return IdentityCard(None, None, "Upload one or more photos of this person.")
        try:
            photos = [load_image(path, self.limits) for path in _paths(files)]
            identity = self.engine.encode_identity(photos, name=name.strip())
        except MagicIDError as error:
            return IdentityCard(None, None, f"⚠ {error}")
        count = len(photos)
        lines = [f"✓ Face found ({count} photo{'s' if count > 1 else ''}), embedding ready."]
        lines += [f"⚠ {warning}" for warning in identity.warnings]
        return IdentityCard(identity, identity.thumbnail, "\n\n".join(lines))

    def rename_identity(self, identity, name: str):
        """The same identity under a new display name (the card's name box changed)."""
        return None if identity is None else replace(identity, name=name.strip())

    # layouts ----------------------------------------------------------------------------------------------
    def template_layout(self, template: str, num_people: int, width: int, height: int):
        layout = Layout.from_template(template, int(num_people), width=width, height=height)
        return layout.assign_identities(int(num_people))

    def photo_layout(self, photo: str | Image.Image | None, width: int, height: int, num_people: int):
        """Poses extracted from a photo, fitted to the output canvas, assigned left to right."""
        if photo is None:
            raise InvalidImageError("Upload a photo of people to extract their poses from")
        image = load_image(photo, self.limits)
        layout = Layout.from_photo(image, width=width, height=height)
        return layout.assign_identities(min(int(num_people), len(layout.left_to_right())))

    def layout_from_file(self, path: str | None):
        """An uploaded layout file, parsed as JSON text only; messages name neither the file nor its content."""
        if not path:
            raise LayoutError("Choose a layout JSON file (saved from this app or `python -m magicid layout`)")
        upload = Path(path)
        if not upload.is_file() or upload.stat().st_size > MAX_LAYOUT_BYTES:
            raise LayoutError(f"The layout file must be a JSON file under {MAX_LAYOUT_BYTES // 2**20} MB")
        try:
            return Layout.from_json(upload.read_bytes())
        except LayoutError as error:
            raise LayoutError(f"That file is not a MagicID layout ({error}): save one from the editor") from error

    # generation -------------------------------------------------------------------------------------------
    def generation_config(self, request: GenerateRequest, seed: int) -> GenerationConfig:
        prompt, negative = apply_style(request.prompt, request.negative_prompt, request.style)
        restore = {"auto": None, "on": True, "off": False}[request.diir_mode]
        values = dict(
            prompt=prompt, negative_prompt=negative, steps=int(request.steps), guidance_scale=float(request.guidance_scale),
            id_scale=float(request.id_scale), controlnet_scale=float(request.controlnet_scale), width=int(request.width),
            height=int(request.height), seed=seed, num_images=int(request.num_images), restore_small_faces=restore,
            restore_threshold_px=int(request.diir_threshold_px),
        )  # fmt: skip
        return GenerationConfig(**values)

    def generate(self, request: GenerateRequest, progress: Progress | None = None) -> GenerateOutputs:
        identities = _require_identities(request.identities)
        if not request.prompt.strip():
            raise MagicIDError("Write a prompt describing the photo (e.g. 'two friends at the beach, golden hour')")
        layout = request.layout
        layout_warnings = layout.validate(len(identities)) if layout is not None else []
        seed = random.randint(0, MAX_SEED) if request.randomize_seed else int(request.seed)
        config = self.generation_config(request, seed)
        result = self.engine.generate(config, identities, layout=layout, progress=progress)
        parameters = {
            **result.parameters, "style": request.style, "user_prompt": request.prompt,
            "user_negative_prompt": request.negative_prompt, "diir_mode": request.diir_mode,
            "diir_threshold_px": int(request.diir_threshold_px),
        }  # fmt: skip
        if layout is not None and "layout" not in parameters:
            parameters["layout"] = layout.to_dict()
        used_layout = Layout.from_dict(parameters["layout"]) if "layout" in parameters else None
        names = [identity.name or f"Person {index + 1}" for index, identity in enumerate(identities)]
        parameters["names"] = names
        messages = _unique(layout_warnings + list(result.messages) + identity_warnings(result.report, names))
        images = [with_parameters(image, {**parameters, "image_index": index}) for index, image in enumerate(result.images)]
        threshold = self.engine.same_person_threshold()
        return GenerateOutputs(
            images=images,
            debug_images=list(result.debug_images),
            report_rows=report_rows(result.report, names),
            messages=_markdown_list(messages) or "All identities were found in the result.",
            seed=seed,
            parameters=parameters,
            identities=list(identities),
            layout=used_layout,
            names=names,
            checks=image_checks(images, result.report, used_layout, names, threshold),
            files=[_png_file(image, f"magicid-{seed}-{index + 1}.png") for index, image in enumerate(images)],
        )

    def fix_faces(
        self, previous: GenerateOutputs | None, index: int | None = None, progress: Progress | None = None,
        only: list[int] | None = None,
    ) -> GenerateOutputs:  # fmt: skip
        """Re-denoise with DIIR the failing identities' faces of result `index` (those in `only`, when given);
        the fixed image is appended."""
        if previous is None or not previous.images:
            raise MagicIDError("Generate an image first, then fix the faces that fail the identity check")
        index = min(max(int(index or 0), 0), len(previous.images) - 1)
        config = DIIRConfig(steps=int(previous.parameters.get("steps", DIIRConfig.steps)), seed=previous.seed)
        source = previous.images[index]
        result = self.engine.fix_faces(source, previous.identities, previous.layout, config, progress=progress, only=only)
        if not result.faces:
            lines = [f"Image {index + 1}: {line}" for line in result.messages]
            return replace(previous, messages=_markdown_list(lines))
        return self._with_fixed_image(previous, index, result)

    def _with_fixed_image(self, previous: GenerateOutputs, index: int, result) -> GenerateOutputs:
        """`previous` with the fixed image appended, its identity check rows, and DIIR's debug views."""
        number, names = len(previous.images) + 1, previous.names
        report = self.engine.check_identities(result.analysis, previous.identities, previous.layout)
        fixed = sorted({face.reference for face in result.faces})
        parameters = {**previous.parameters, "image_index": number - 1, "fixed_from_image": index + 1,
                      "fixed_identities": [_identity_name(identity, names) for identity in fixed]}  # fmt: skip
        rows = [[number, *row[1:]] for row in report_rows(report, names)]
        warnings = [line.replace("⚠ ", f"⚠ image {number}: ", 1) for line in identity_warnings(report, names)]
        who = ", ".join(parameters["fixed_identities"])
        summary = f"Image {number} is image {index + 1} with the faces of {who} re-denoised (DIIR)."
        verdict = warnings or [f"Image {number}: every identity is in its place (see the identity check)."]
        image = with_parameters(result.image, parameters)
        check = image_checks([image], report, previous.layout, names, self.engine.same_person_threshold())
        return replace(
            previous,
            images=[*previous.images, image],
            checks=[*previous.checks, *check],
            files=[*previous.files, _png_file(image, f"magicid-{previous.seed}-{number}-fixed.png")],
            debug_images=[*previous.debug_images, *result.debug_images],
            report_rows=[*previous.report_rows, *rows],
            messages=_markdown_list([summary, *result.messages, *verdict]),
        )

    # restoration ------------------------------------------------------------------------------------------
    def restore(
        self, image: str | Image.Image | None, reference_files: list[str] | None, config: DIIRConfig,
        progress: Progress | None = None, who: str = "",
    ) -> RestoreOutputs:  # fmt: skip
        """`who`: per small face, largest first, the reference number or "off" ("2, off, 1"); empty: by likeness."""
        from magicid.diir import parse_assignment

        if image is None:
            raise InvalidImageError("Upload the image whose faces should be restored")
        if not reference_files:
            raise MagicIDError("Upload at least one reference photo (one photo per person in the image)")
        assignment = parse_assignment(who, len(_paths(reference_files)))
        before = load_image(image, self.limits)
        references = [
            self.engine.encode_identity([load_image(path, self.limits)], name=Path(path).stem)
            for path in _paths(reference_files)
        ]
        result = self.engine.restore(before, references, config, progress=progress, assignment=assignment)
        return RestoreOutputs(before, result.image, list(result.debug_images), _markdown_list(list(result.messages)))

    # reproducibility --------------------------------------------------------------------------------------
    def read_parameters(self, path: str | None) -> dict:
        """The generation parameters stored in a MagicID PNG; `InvalidImageError` when it carries none."""
        from magicid.pngmeta import read_parameters

        if not path:
            raise InvalidImageError("Drop a PNG saved by MagicID to read its parameters")
        name = Path(path).name
        try:
            parameters = read_parameters(path)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise InvalidImageError(f"{name} could not be read as a PNG: drop a PNG saved by MagicID") from error
        if not parameters:
            raise InvalidImageError(f"{name} carries no MagicID parameters: drop a PNG downloaded from this app")
        return parameters


def controls_from_parameters(parameters: dict) -> dict[str, Any]:
    """Widget values (by control name) that reproduce a generation from its stored parameters."""
    controls: dict[str, Any] = {}
    styled = "user_prompt" in parameters
    simple = {
        "prompt": "user_prompt" if styled else "prompt", "negative_prompt": "user_negative_prompt" if styled else "negative_prompt",
        "seed": "seed", "steps": "steps", "guidance_scale": "guidance_scale", "id_scale": "id_scale",
        "controlnet_scale": "controlnet_scale", "num_images": "num_images", "diir_mode": "diir_mode",
        "diir_threshold_px": "diir_threshold_px",
    }  # fmt: skip
    for control, key in simple.items():
        if parameters.get(key) is not None:
            controls[control] = parameters[key]
    controls["style"] = parameters.get("style", "None") if styled else "None"
    if "diir_mode" not in controls and "restore_small_faces" in parameters:
        controls["diir_mode"] = {None: "auto", True: "on", False: "off"}.get(parameters["restore_small_faces"], "auto")
    if parameters.get("width") and parameters.get("height"):
        controls["size"] = (int(parameters["width"]), int(parameters["height"]))
    if isinstance(parameters.get("layout"), dict):
        controls["layout"] = Layout.from_dict(parameters["layout"])
    names = parameters.get("names") or parameters.get("identities")
    if isinstance(names, list) and all(isinstance(name, str) for name in names):
        controls["names"] = [name.strip()[:80] or f"Person {index + 1}" for index, name in enumerate(names)]
    return controls


def with_parameters(image: Image.Image, parameters: dict) -> Image.Image:
    """`image` re-opened from a PNG written by `magicid.pngmeta.save_png`, so downloads keep the text chunk."""
    from magicid.pngmeta import save_png

    buffer = io.BytesIO()
    save_png(image, buffer, parameters)
    buffer.seek(0)
    reopened = Image.open(buffer)
    reopened.load()
    return reopened


def _png_file(image: Image.Image, name: str) -> str:
    """`image` (with its parameters) as a PNG file called `name`, so the gallery's download keeps that name."""
    from magicid.pngmeta import read_parameters, save_png

    path = session_file(name)
    save_png(image, path, read_parameters(image) or {})
    return str(path)


def report_rows(report: list, names: list[str]) -> list[list[Any]]:
    """One table row per identity and image: image number, name, FaceSim similarity, IoU with its region, status."""
    per_image = max(len(names), 1)
    return [
        [index // per_image + 1, _identity_name(match.identity, names), _rounded(match.similarity), _rounded(match.iou), match.status]
        for index, match in enumerate(report)
    ]


STATUS_WARNINGS = {
    "missing": "{name} is missing: no face in their region looks like them. Raise ID strength or try another seed",
    "misplaced": "{name} appears outside their region: check the layout's face boxes",
    "duplicate": "{name} is shown twice: lower ID strength or move the people further apart",
}


def identity_warnings(report: list, names: list[str]) -> list[str]:
    """A warning per identity (and image) that is missing, misplaced or shown twice in the result."""
    per_image, several = max(len(names), 1), len(report) > len(names)
    warnings = []
    for index, match in enumerate(report):
        if match.status in STATUS_WARNINGS:
            prefix = f"image {index // per_image + 1}: " if several else ""
            warnings.append("⚠ " + prefix + STATUS_WARNINGS[match.status].format(name=_identity_name(match.identity, names)))
    return warnings


def _identity_name(identity, names: list[str]) -> str:
    if identity is None:
        return "-"
    if isinstance(identity, int) and 0 <= identity < len(names):
        return names[identity]
    return str(identity)


def _rounded(value) -> float | None:
    return None if value is None else round(float(value), 3)


def _require_identities(identities: list) -> list:
    if not identities:
        raise MagicIDError("Add at least one person and upload a photo of them")
    missing = [str(index + 1) for index, identity in enumerate(identities) if identity is None]
    if missing:
        raise MagicIDError(
            f"Person {', '.join(missing)} has no usable photo yet: upload one (a clear face) or lower the number of people"
        )
    return identities


def _paths(files) -> list[str]:
    """Paths from a File's value (paths or file objects) or a Gallery's ((path, caption) pairs)."""
    files = files if isinstance(files, list) else [files]
    paths = []
    for item in files:
        item = item[0] if isinstance(item, tuple) else item
        paths.append(str(item) if isinstance(item, (str, Path)) else str(getattr(item, "name", item)))
    return paths


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def _markdown_list(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)
