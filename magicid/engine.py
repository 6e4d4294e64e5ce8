"""`MagicID`: the one facade the CLI and the app call (profile -> identities -> layout -> image -> report).

Models load on first use (`MagicID.from_profile` loads nothing) and stay cached on the instance.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import PIL.Image
import torch

from magicid.config import (
    PAPER_RESOLUTION,
    DIIRConfig,
    GenerationConfig,
    Limits,
    ProfileConfig,
    validate_diir_config,
    validate_generation_config,
)
from magicid.errors import InvalidSettingError, MagicIDError
from magicid.identity import Identity, IdentityEncoder
from magicid.perception.analysis import ImageAnalysis
from magicid.pipeline import MagicIDPipeline


logger = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
MASK_COLOURS = np.array([(255, 80, 80), (80, 160, 255), (90, 220, 90), (250, 200, 60), (200, 90, 230), (60, 220, 220)])
DEFAULT_TEMPLATE = "half-body"
_LOADED: dict[str, tuple[MagicIDPipeline, IdentityEncoder]] = {}  # per process, keyed by the profile config
_LOAD_LOCK = threading.Lock()


@dataclass
class GenerationResult:
    images: list[PIL.Image.Image]
    debug_images: list[tuple[PIL.Image.Image, str]] = field(default_factory=list)
    report: list = field(default_factory=list)  # magicid.facesim.FaceMatch per identity (per image, in order)
    messages: list[str] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    report_lines: list[str] = field(default_factory=list)  # the identity check in words, per identity and image
    analyses: list = field(default_factory=list)  # perception.ImageAnalysis of each image, as the report saw it


class MagicID:
    """Identity-faithful portraits and group photos with one model profile (tiny / hub / magicid)."""

    def __init__(self, profile: ProfileConfig, limits: Limits | None = None, embedder=None):
        self.profile = profile
        self.limits = limits or Limits()
        self._embedder = embedder
        self._models: tuple[MagicIDPipeline, IdentityEncoder] | None = None

    @classmethod
    def from_profile(cls, profile: str | ProfileConfig = "tiny", **kwargs) -> MagicID:
        """An engine for `profile` (a name, with MAGICID_* env overrides, or a full config). Loads nothing yet."""
        if isinstance(profile, str):
            try:
                profile = ProfileConfig.from_env(profile)
            except ValueError as error:
                raise InvalidSettingError(str(error)) from error
        return cls(profile, **kwargs)

    @property
    def is_miniature(self) -> bool:
        return self.profile.name == "tiny"

    def banner(self) -> str:
        """One paragraph saying which model runs (and, for tiny, that its outputs are not photographs)."""
        from magicid.profiles import MINI_NOTICE, TINY_NOTICE

        if self.is_miniature:
            return TINY_NOTICE
        if self.profile.name == "mini":
            return MINI_NOTICE
        if self.profile.name == "hub":
            return (
                f"hub profile: {self.profile.base_model} + OpenPose ControlNet + IP-Adapter-FaceID-PlusV2 "
                "(public weights; identity through the IP-Adapter, the paper's baseline, not MagicID's own weights)."
            )
        return f"magicid profile: MagicID weights from {self.profile.magicid_weights} on {self.profile.base_model}."

    # --- models ---------------------------------------------------------------------------------------------

    def _load(self) -> tuple[MagicIDPipeline, IdentityEncoder]:
        """The profile's models, loaded once per process (an injected embedder gets its own copy)."""
        from magicid.profiles import load_profile

        with _LOAD_LOCK:
            if self._models is None:
                key = repr(self.profile)
                if self._embedder is not None:
                    self._models = load_profile(self.profile, embedder=self._embedder)
                elif key in _LOADED:
                    self._models = _LOADED[key]
                else:
                    self._models = _LOADED[key] = load_profile(self.profile)
                self._models[0].set_progress_bar_config(disable=True)
            return self._models

    def preload(self) -> MagicID:
        """Load the profile's models and face embedder now rather than on first use (a server's start-up)."""
        _, encoder = self._load()
        encoder.embedder  # noqa: B018 (loads it)
        return self

    @property
    def pipeline(self) -> MagicIDPipeline:
        return self._load()[0]

    @property
    def identity_encoder(self) -> IdentityEncoder:
        return self._load()[1]

    # --- use cases ------------------------------------------------------------------------------------------

    def encode_identity(self, photos: list, name: str = "") -> Identity:
        """One identity from 1..8 photos of the same person (raises `NoFaceError` naming a photo without a face)."""
        return self.identity_encoder.encode(photos, name=name)

    def generate(
        self,
        config: GenerationConfig,
        identities: list[Identity],
        layout=None,
        progress: Progress | None = None,
    ) -> GenerationResult:
        """Generate `config.num_images` pictures of `identities` placed by `layout` (default: the half-body
        template; portraits for a model trained on face close-ups)."""
        from magicid.group import group_conditions

        validate_generation(config, len(identities), self.limits)
        pipe, encoder = self._load()
        template = "portrait" if pipe.native_side < PAPER_RESOLUTION else DEFAULT_TEMPLATE
        layout = layout or _default_layout(len(identities), config.width, config.height, template)
        config, layout, scale_note = at_model_scale(config, layout, pipe.native_side)
        # MMF is trained on skeletons with face landmarks; the hub's public OpenPose ControlNet saw skeletons only
        landmarks = pipe.id_mode == "controlnet"
        conditions = group_conditions(layout, len(identities), config.width, config.height, face_landmarks=landmarks)
        id_tokens = encoder.id_tokens(identities)
        # IP-Adapter (hub) was trained with null tokens in its unconditional branch; MagicID's own ID attention
        # keeps that branch exactly text-only (zero tokens)
        negative_tokens = encoder.null_tokens(len(identities)) if pipe.id_mode == "unet" else None
        masked = len(identities) > 1 and config.masked_id_attention  # one identity: Eq. 1, no mask needed
        masks = conditions.id_masks if masked else None
        output = pipe(
            prompt=config.prompt,
            image=conditions.control_image,
            negative_prompt=config.negative_prompt or None,
            id_embeds=id_tokens,
            id_masks=masks,
            id_scale=config.id_scale,
            negative_id_embeds=negative_tokens,
            controlnet_conditioning_scale=config.controlnet_scale,
            num_inference_steps=config.steps,
            guidance_scale=config.guidance_scale,
            width=config.width,
            height=config.height,
            num_images_per_prompt=config.num_images,
            generator=torch.Generator().manual_seed(config.seed),
            callback_on_step_end=_step_callback(progress, config.steps),
        )
        messages = [warning for identity in identities for warning in identity.warnings] + conditions.warnings
        messages += [note for note in [prompt_overflow_note(pipe.tokenizer, config.prompt)] if note]
        messages += [scale_note] if scale_note else []
        if self.is_miniature:
            messages.insert(0, "Miniature untrained model (tiny profile): the pictures are not photographs.")
        analyses = [ImageAnalysis(image, limits=self.limits) for image in output.images]
        debug_images = _condition_debug_images(conditions)
        restored = _should_restore(config, conditions.layout, len(identities))
        if restored:
            analyses = self._restore_all(
                analyses, identities, config, conditions.layout, debug_images, messages, progress
            )
        report_lines: list[str] = []
        report = self._report(analyses, conditions.layout, identities, report_lines)
        return GenerationResult(
            images=[analysis.image for analysis in analyses],
            debug_images=debug_images,
            report=report,
            messages=messages,
            parameters=self._parameters(config, identities, conditions.layout, restored),
            report_lines=report_lines,
            analyses=analyses,
        )

    def restore(
        self, image, references: list[Identity], config: DIIRConfig | None = None, progress=None,
        assignment: list[int | None] | None = None,
    ):  # fmt: skip
        """DIIR (Alg. 2) on an existing picture: restore its small faces with `references` (per face, largest
        first, the reference index in `assignment` or None to leave it; default: matched by similarity)."""
        from magicid import diir

        config = config or DIIRConfig()
        validate_diir_config(config, self.limits)
        pipe, encoder = self._load()
        return diir.restore(
            pipe, encoder, image, references, config, assignment=assignment, progress=progress, limits=self.limits
        )

    def fix_faces(
        self, image, identities: list[Identity], layout, config: DIIRConfig | None = None, progress=None,
        only: list[int] | None = None,
    ):  # fmt: skip
        """Re-denoise, with DIIR and each person's own F_id, the faces of identities that fail the identity check
        (of those in `only`, when given).

        An identity fails when FaceSim calls it missing, misplaced or duplicated, or scores it below the embedder's
        same-person threshold. Its face is the detected face overlapping its `layout` region most, whatever its
        size; pose, colours and background are kept. Returns a `diir.RestorationResult`.
        """
        from magicid import diir
        from magicid.imageio import load_image

        if not identities:
            raise MagicIDError("Add at least one identity (a photo of the person's face) to fix faces")
        analysis = ImageAnalysis(load_image(image, self.limits), limits=self.limits)
        image = analysis.image
        layout = layout if image.size == (layout.width, layout.height) else layout.fit_to(*image.size)
        failing = self._failing_identities(analysis, identities, layout)
        failing = failing if only is None else [index for index in failing if index in only]
        if not failing:
            message = "Every identity passes the identity check: the image is unchanged"
            return diir.RestorationResult(image=image.copy(), messages=[message], analysis=analysis)
        boxes = layout.identity_boxes(len(identities))
        chosen, assignment, skipped = faces_for_identities(analysis.faces, boxes, failing)
        messages = [f"{_name(identities, index)}: no face overlaps their region, nothing to fix" for index in skipped]
        if not chosen:
            messages.append("No face to fix: the image is unchanged (try another seed)")
            return diir.RestorationResult(image=image.copy(), messages=messages, analysis=analysis)
        config = config or DIIRConfig()
        validate_diir_config(config, self.limits)
        pipe, encoder = self._load()
        result = diir.restore(pipe, encoder, analysis, identities, config, chosen, assignment, progress, self.limits)
        result.messages = messages + list(result.messages)
        return result

    def same_person_threshold(self) -> float:
        """FaceSim above which the identity check takes a face for its person (depends on the embedder)."""
        from magicid.facesim import same_person_threshold

        return same_person_threshold(self.identity_encoder.embedder)

    def check_identities(self, image, identities: list[Identity], layout) -> list:
        """One image's identity check: a `facesim.FaceMatch` per identity (FaceSim, IoU with its region, status).
        `image` may be its `ImageAnalysis` (as `GenerationResult.analyses` and `RestorationResult.analysis` hold)."""
        from magicid.group import identity_report

        return identity_report(image, layout, identities, embedder=self.identity_encoder.embedder)

    # --- helpers --------------------------------------------------------------------------------------------

    def _restore_all(self, analyses, identities, config, layout, debug_images, messages, progress) -> list:
        """DIIR on each generated image; each small face keeps the identity the layout put there. Returns the
        analyses of the restored images."""
        from magicid import diir

        pipe, encoder = self._load()
        diir_config = DIIRConfig(threshold_px=config.restore_threshold_px, seed=config.seed)
        boxes = layout.identity_boxes(len(identities))
        restored = []
        for analysis in analyses:
            faces = analysis.faces_smaller_than(diir_config.threshold_px)
            faces, assignment, _ = faces_for_identities(faces, boxes, list(range(len(identities))))
            result = diir.restore(pipe, encoder, analysis, identities, diir_config, faces, assignment, progress)
            restored.append(result.analysis)
            debug_images += result.debug_images
            messages += result.messages
        return restored

    def _report(self, analyses, layout, identities, lines: list[str]) -> list:
        from magicid.group import report_lines

        report, names = [], [identity.name for identity in identities]
        for index, analysis in enumerate(analyses):
            matches = self.check_identities(analysis, identities, layout)
            report += matches
            prefix = f"image {index + 1}: " if len(analyses) > 1 else ""
            lines += [prefix + line for line in report_lines(matches, names)]
        return report

    def _failing_identities(self, analysis, identities, layout) -> list[int]:
        threshold = self.same_person_threshold()
        report = self.check_identities(analysis, identities, layout)
        return [match.identity for match in report if is_failing(match, threshold)]

    def _parameters(self, config: GenerationConfig, identities, layout, restored: bool) -> dict:
        return {
            **dataclasses.asdict(config),
            "restore_small_faces": restored,
            "profile": self.profile.name,
            "miniature": self.is_miniature,
            "identities": [identity.name for identity in identities],
            "layout": layout.to_dict(),
        }


def validate_generation(config: GenerationConfig, num_identities: int, limits: Limits) -> None:
    """Raise a one-line `MagicIDError` for settings or identity counts the model cannot run."""
    validate_generation_config(config, limits)
    if num_identities < 1:
        raise MagicIDError("Add at least one identity (a photo of the person's face)")
    if num_identities > limits.max_identities:
        raise InvalidSettingError(f"{num_identities} identities given; at most {limits.max_identities} per picture")


def _default_layout(num_identities: int, width: int, height: int, template: str = DEFAULT_TEMPLATE):
    from magicid.layout import Layout

    return Layout.from_template(template, num_identities, width, height).assign_identities(num_identities)


def at_model_scale(config: GenerationConfig, layout, native_side: int) -> tuple[GenerationConfig, object, str]:
    """Settings and layout for a model trained below SD1.5's 512 px (MagicID-mini: 128): the canvas, and DIIR's
    small-face threshold with it, shrink by native_side / 512, so a 512 px layout is the model's own 128 px portrait.
    Returns (config, layout, a note for the user, or "" when nothing changed)."""
    scale = native_side / PAPER_RESOLUTION
    if scale >= 1:
        return config, layout, ""
    width, height = (max(8 * round(side * scale / 8), 8) for side in (config.width, config.height))
    scaled = dataclasses.replace(config, width=width, height=height,
                                 restore_threshold_px=max(1, round(config.restore_threshold_px * scale)))  # fmt: skip
    note = (f"This model works at {native_side} px: the picture is {width}x{height}, the layout scaled to "
            f"{scale:g} of {config.width}x{config.height}.")
    return scaled, layout.fit_to(width, height), note


def _should_restore(config: GenerationConfig, layout, num_identities: int) -> bool:
    """`restore_small_faces=None`: restore when some face region is smaller than DIIR's threshold (paper: 100 px)."""
    if config.restore_small_faces is not None:
        return config.restore_small_faces
    threshold = config.restore_threshold_px
    boxes = layout.identity_boxes(num_identities)
    return any(min(box[2] - box[0], box[3] - box[1]) < threshold for box in boxes)


def is_failing(match, threshold: float) -> bool:
    """An identity check entry that fails: not in place (missing, misplaced, duplicated) or not recognisable."""
    return match.status != "ok" or match.similarity < threshold


def faces_for_identities(faces: list, identity_boxes: list, identities: list[int]) -> tuple[list, list[int], list[int]]:
    """Per identity in `identities`, the detected face overlapping its region most (IoU > 0), each face used once.

    Returns the chosen faces, the identity of each, and the identities skipped (no face overlaps their region).
    """
    from magicid.face_regions import iou

    chosen, assignment, skipped, taken = [], [], [], set()
    for identity in identities:
        box = identity_boxes[identity]
        overlaps = [0.0 if index in taken or box is None else iou(face.box, box) for index, face in enumerate(faces)]
        best = int(np.argmax(overlaps)) if overlaps else -1
        if best < 0 or overlaps[best] <= 0:
            skipped.append(identity)
            continue
        taken.add(best)
        chosen.append(faces[best])
        assignment.append(identity)
    return chosen, assignment, skipped


def prompt_overflow_note(tokenizer, prompt: str) -> str:
    """A note naming the end of `prompt` that the text encoder never sees (it reads `model_max_length` tokens,
    start and end marks included), or "" when all of it fits."""
    if tokenizer is None or not prompt:
        return ""
    limit = tokenizer.model_max_length
    ids = tokenizer(prompt, truncation=False, verbose=False).input_ids
    if len(ids) <= limit:
        return ""
    ignored = tokenizer.decode(ids[limit - 1 : -1], skip_special_tokens=True).strip()
    return f"The prompt is longer than the model reads ({limit - 2} tokens): “{ignored}” was ignored; shorten it"


def _name(identities: list, index: int) -> str:
    return getattr(identities[index], "name", "") or f"identity {index + 1}"


def _step_callback(progress: Progress | None, total: int):
    if progress is None:
        return None

    def on_step(pipeline, step, timestep, tensors):
        progress(step + 1, total)
        return {}

    return on_step


def _condition_debug_images(conditions) -> list[tuple[PIL.Image.Image, str]]:
    skeleton = conditions.control_image
    drawn = "OpenPose skeleton + face landmarks" if conditions.layout.has_face_landmarks() else "OpenPose skeleton"
    images = [(skeleton, f"{drawn} (ControlNet condition)")]
    masks = np.asarray(conditions.id_masks, dtype=np.float32)
    if len(masks):
        overlay = np.asarray(skeleton, dtype=np.float32) * 0.5
        for index, mask in enumerate(masks):
            overlay += mask[..., None] * MASK_COLOURS[index % len(MASK_COLOURS)] * 0.5
        images.append((PIL.Image.fromarray(np.clip(overlay, 0, 255).astype(np.uint8)), "face regions M_id (MGMICA)"))
    return images
