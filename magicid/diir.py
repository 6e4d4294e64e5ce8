"""DIIR: DDIM Inversion based ID Restoration of small faces (paper Sec. 3.2, Alg. 2, Eq. 5-6).

Per face: crop with a margin and resize to the model's resolution; VAE-encode to Z0^; DDIM-invert for T steps
(diffusers' `DDIMInverseScheduler`), caching the latents Z_t^ and the self-attention features; start from
Z_T^ and denoise with the face-landmark condition and the identity tokens F_id, applying Mask-Guided Face
Fusion (`magicid.mgff`) to the self-attention features (Alg. 2, line 5) and to the latents (line 7) inside
the face mask M_p; decode; colour-match; paste back with a feathered mask. All faces of an image are one batch.

"Self-attention features" here means the output of every UNet self-attention layer (`attn1`), per timestep.
Why the output and not the attention maps or Q/K: the output is a (tokens x channels) feature map on the
layer's spatial grid, so Eq. 5's per-channel masked mean/std and Eq. 6's spatial blend apply to it as they do
to latents (AdaIN on probability maps would break their row normalisation); it is one tensor per layer and
step, about half of a Q/K cache and ~60x less than the maps (../shared/notes/perf.md); and the attention
itself still runs in the fused SDPA kernel. Outside M_p every layer then outputs exactly what it output
during inversion, which together with the latent fusion keeps background, colour and style.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents
from PIL import Image
from torch import Tensor
from torch.nn import functional as F

from magicid import mgff
from magicid.config import DIIRConfig, Limits
from magicid.errors import InvalidSettingError, MagicIDError
from magicid.imageio import ImageSource, load_image
from magicid.perception import Face, draw_face_landmarks, face_landmarks, face_region_mask
from magicid.perception.analysis import ImageAnalysis


logger = logging.getLogger(__name__)

NoiseFn = Callable[[Tensor, Tensor], Tensor]  # (latents, timestep) -> predicted noise, same shape as latents
Progress = Callable[[int, int], None]
SELF_ATTENTION_SUFFIX = "attn1.processor"
DEBUG_PREVIEW_PX = 256


@dataclass
class RestoredFace:
    """One restored face: where it was, whom it was matched to, and its debug views."""

    index: int  # position in the list of candidate faces (detected faces, largest first, or those given)
    face: Face  # in image pixels
    reference: int  # index into the references
    identity: str
    similarity_before: float | None  # cosine similarity to the reference before restoration (None: not measured)
    similarity_after: float | None  # the same after restoration
    crop_box: np.ndarray  # (4,) int, the square crop in image pixels (may reach past the image border)
    paste_mask: np.ndarray  # (side, side) float32 in [0, 1] over `crop_box`; 0 = pixel left untouched
    before: Image.Image  # the crop as it was
    after: Image.Image  # the crop after paste-back
    landmarks: Image.Image  # the landmark condition, at the model resolution
    parsing_mask: Image.Image  # M_p, at the model resolution

    def paste_mask_in(self, size: tuple[int, int]) -> np.ndarray:
        """`paste_mask` placed in a (height, width) = `size[::-1]` canvas of the whole image."""
        width, height = size
        canvas = np.zeros((height, width), dtype=np.float32)
        (x0, y0, x1, y1), (cx0, cy0, cx1, cy1) = _visible_part(self.crop_box, size)
        canvas[y0:y1, x0:x1] = self.paste_mask[cy0:cy1, cx0:cx1]
        return canvas


@dataclass
class RestorationResult:
    image: Image.Image
    faces: list[RestoredFace] = field(default_factory=list)
    debug_images: list[tuple[Image.Image, str]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    analysis: ImageAnalysis | None = None  # of `image`, for whoever checks the result next (default: a fresh one)

    def __post_init__(self):
        self.analysis = self.analysis or ImageAnalysis(self.image)


@dataclass
class _FaceJob:
    """A face prepared for the model: crop at model resolution, landmark condition, parsing mask."""

    index: int
    face: Face
    reference: int
    similarity: float | None
    crop_box: np.ndarray
    crop: Image.Image  # at model resolution
    condition: Image.Image
    mask: np.ndarray  # (res, res) float32


class SelfAttentionFusion:
    """Shared state of the MGFF self-attention processors: records during inversion, fuses during denoising.

    `mode` is "record" (store each layer's output under the current timestep), "fuse" (Eq. 5 + 6 toward the
    stored output inside the mask) or "off". The loops set `timestep` before each model call.
    """

    def __init__(self, mask: Tensor | None = None):
        self.mode = "off"
        self.timestep: int | None = None
        self.mask = mask  # (B, 1, h, w) on the latent grid
        self.features: dict[tuple[int, str], Tensor] = {}
        self._layer_masks: dict[int, Tensor] = {}

    def __call__(self, layer: str, output: Tensor) -> Tensor:
        if self.mode == "record":
            self.features[(self.timestep, layer)] = output.detach().clone()
        elif self.mode == "fuse" and self.mask is not None:
            cached = self.features.get((self.timestep, layer))
            if cached is not None:
                cached = _repeat_batch(cached, output.shape[0])
                return mgff.fuse(output, cached, self._token_mask(output), dims=mgff.TOKEN_DIMS)
        return output

    def cache_bytes(self) -> int:
        return sum(feature.numel() * feature.element_size() for feature in self.features.values())

    def _token_mask(self, output: Tensor) -> Tensor:
        """M_p resized to the layer's token grid, as (B, tokens, 1)."""
        tokens = output.shape[1]
        if tokens not in self._layer_masks:
            height, width = _token_grid(self.mask.shape[-2:], tokens)
            grid = F.interpolate(self.mask, size=(height, width), mode="area")
            self._layer_masks[tokens] = grid.flatten(2).transpose(1, 2).to(output.dtype)
        return _repeat_batch(self._layer_masks[tokens], output.shape[0])


class MGFFSelfAttnProcessor:
    """Wraps a self-attention processor; hands its output to the `SelfAttentionFusion` (record or fuse)."""

    def __init__(self, processor, fusion: SelfAttentionFusion, layer: str):
        self.processor = processor
        self.fusion = fusion
        self.layer = layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        output = self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        return self.fusion(self.layer, output)


@contextmanager
def self_attention_fusion(unet, fusion: SelfAttentionFusion) -> Iterator[SelfAttentionFusion]:
    """Install MGFF on every `attn1` of `unet` (cross-attention untouched); restore the processors on exit."""
    original = dict(unet.attn_processors)
    wrapped = {
        name: MGFFSelfAttnProcessor(processor, fusion, name) if name.endswith(SELF_ATTENTION_SUFFIX) else processor
        for name, processor in original.items()
    }
    unet.set_attn_processor(wrapped)
    try:
        yield fusion
    finally:
        unet.set_attn_processor(dict(original))


def ddim_invert(
    noise_fn: NoiseFn,
    latents: Tensor,
    scheduler_config: dict,
    steps: int,
    refine_iters: int = 0,
    fusion: SelfAttentionFusion | None = None,
    progress: Callable[[], None] | None = None,
) -> list[Tensor]:
    """DDIM inversion Z0^ -> Z_T^ (Alg. 2, lines 1-2). Returns [Z0^, Z1^, ..., ZT^] keyed like the sampler's steps.

    `refine_iters` > 0 solves each inverse step as a fixed point (the noise is evaluated at the new latent, as
    the sampler will), which makes inversion + denoising an exact round trip at the cost of extra model calls.
    With `fusion` given, each layer's self-attention output is recorded under the step's timestep.
    """
    scheduler = DDIMInverseScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(steps, device=latents.device)
    trajectory = [latents]
    if fusion is not None:
        fusion.mode = "record"
    for timestep in scheduler.timesteps:
        if fusion is not None:
            fusion.timestep = int(timestep)
        previous = trajectory[-1]
        current = scheduler.step(noise_fn(previous, timestep), timestep, previous).prev_sample
        for _ in range(refine_iters):
            current = scheduler.step(noise_fn(current, timestep), timestep, previous).prev_sample
        trajectory.append(current)
        if progress is not None:
            progress()
    if fusion is not None:
        fusion.mode = "off"
    return trajectory


def ddim_denoise(
    noise_fn: NoiseFn,
    trajectory: list[Tensor],
    scheduler_config: dict,
    mask: Tensor | None = None,
    fusion: SelfAttentionFusion | None = None,
    fuse_latents: bool = True,
    progress: Callable[[], None] | None = None,
) -> Tensor:
    """Denoise from Z_T = Z_T^ (Alg. 2, lines 3-8), with latent MGFF toward Z_{t-1}^ inside `mask` (line 7)."""
    scheduler = DDIMScheduler.from_config(scheduler_config)
    steps = len(trajectory) - 1
    scheduler.set_timesteps(steps, device=trajectory[-1].device)
    latents = trajectory[-1]
    if fusion is not None:
        fusion.mode = "fuse"
    for index, timestep in enumerate(scheduler.timesteps):
        if fusion is not None:
            fusion.timestep = int(timestep)
        latents = scheduler.step(noise_fn(latents, timestep), timestep, latents).prev_sample
        if fuse_latents and mask is not None:
            latents = mgff.fuse(latents, trajectory[steps - 1 - index], mask)
        if progress is not None:
            progress()
    if fusion is not None:
        fusion.mode = "off"
    return latents


def _repeat_batch(tensor: Tensor, batch: int) -> Tensor:
    """Repeat along the batch for classifier-free guidance (the batch grows k-fold as [uncond; cond])."""
    if tensor.shape[0] == batch:
        return tensor
    if batch % tensor.shape[0]:
        raise ValueError(f"batch {batch} is not a multiple of the cached batch {tensor.shape[0]}")
    return tensor.repeat(batch // tensor.shape[0], *([1] * (tensor.ndim - 1)))


def _token_grid(latent_size: torch.Size, tokens: int) -> tuple[int, int]:
    """The (h, w) grid of an attention layer with `tokens` tokens, for a UNet fed (H, W) latents."""
    height, width = int(latent_size[0]), int(latent_size[1])
    while height * width > tokens:
        height, width = (height + 1) // 2, (width + 1) // 2
    if height * width != tokens:
        raise ValueError(f"cannot map {tokens} tokens to a grid of the {tuple(latent_size)} latents")
    return height, width


def restore(
    pipe,
    identity_encoder,
    image: ImageSource | ImageAnalysis,
    references: Sequence,
    config: DIIRConfig | None = None,
    faces: Sequence | None = None,
    assignment: Sequence[int | None] | None = None,
    progress: Progress | None = None,
    limits: Limits | None = None,
) -> RestorationResult:
    """Restore the small faces of `image` with the identities in `references` (Alg. 2 for every face, batched).

    Args:
        pipe: a `MagicIDPipeline` (its ControlNet's landmark mode, or `pipe.landmark_controlnet` when present).
        identity_encoder: the profile's `IdentityEncoder` (F_id tokens, and the embedder for matching).
        image: any image, generated by MagicID or not, or its `ImageAnalysis` (whose faces and embeddings are then
            reused instead of computed again).
        references: the `Identity` of each person who may appear.
        faces: the faces to restore (perception `Face`s in image pixels); default: detected faces smaller than
            `config.threshold_px`.
        assignment: per face, the index of its reference, or None to leave that face alone; default: one
            reference for all faces, else matching by face similarity (one face per reference when possible).
        progress: called with (model steps done, total).
        limits: at most `limits.max_faces_per_restore` faces are restored (the first ones), and the result says so.
    Returns the image with every pixel outside the paste masks unchanged, the restored faces, debug images
    (crop, landmarks, mask, before/after), user-facing messages and the result's `ImageAnalysis`.
    """
    config = config or DIIRConfig()
    if not references:
        raise MagicIDError("No reference identity given: add at least one photo of the person to restore")
    analysis = image if isinstance(image, ImageAnalysis) else ImageAnalysis(load_image(image), limits=limits)
    image = analysis.image
    result = RestorationResult(image=image.copy(), analysis=analysis)
    candidates = list(faces) if faces is not None else analysis.faces_smaller_than(config.threshold_px)
    if not candidates:
        result.messages.append(f"No face smaller than {config.threshold_px} px found: the image is unchanged")
        return result
    matches = _match_references(analysis, candidates, references, identity_encoder, assignment, result.messages,
                                config)  # fmt: skip
    selected = [
        (index, face, reference, similarity)
        for index, (face, (reference, similarity)) in enumerate(zip(candidates, matches))
        if reference is not None
    ]
    if not selected:
        if assignment is not None:
            result.messages.append("Every face was switched off: the image is unchanged")
        else:
            result.messages.append("No face resembles a reference closely enough: the image is unchanged")
        return result
    cap = (limits or Limits()).max_faces_per_restore
    if len(selected) > cap:
        result.messages.append(f"{len(selected)} faces to restore: only the first {cap} were (the limit per request)")
        selected = selected[:cap]
    jobs = [_prepare_face(image, *face, _resolution(pipe, config), config) for face in selected]
    tokens = identity_encoder.id_tokens(list(references))
    restored = _run_batches(pipe, jobs, tokens, config, progress)
    pixels = np.array(image.convert("RGB"))
    for job, crop in zip(jobs, restored):
        result.faces.append(_paste_back(pixels, job, crop, references, config))
    result.image = Image.fromarray(pixels)
    _measure_after(result, references, identity_encoder.embedder)
    result.debug_images = [view for face in result.faces for view in _debug_views(face)]
    from magicid.facesim import same_person_threshold

    threshold = same_person_threshold(identity_encoder.embedder)
    result.messages += [_face_message(face, threshold) for face in result.faces]
    return result


@torch.no_grad()
def restore_crops(
    pipe,
    crops: list[Image.Image],
    conditions: list[Image.Image],
    masks: np.ndarray,
    id_tokens: Tensor,
    config: DIIRConfig,
    progress: Callable[[], None] | None = None,
) -> list[Image.Image]:
    """Alg. 2 on a batch of face crops (all at the model resolution): returns the restored crops.

    `masks` (B, res, res) is M_p; `id_tokens` (B, num_tokens, dim) is each face's F_id.
    """
    device, dtype = pipe._execution_device, pipe.unet.dtype
    batch, resolution = len(crops), crops[0].width
    pixels = pipe.image_processor.preprocess(crops, height=resolution, width=resolution).to(device, dtype)
    z0 = retrieve_latents(pipe.vae.encode(pixels), sample_mode="argmax") * pipe.vae.config.scaling_factor
    control = pipe.prepare_image(conditions, resolution, resolution, batch, 1, device, pipe.controlnet.dtype)
    latent_mask = F.interpolate(torch.from_numpy(masks[:, None]).to(device, torch.float32), z0.shape[-2:], mode="area")
    text, guided_text = _prompt_embeds(pipe, config, batch, device)
    tokens = id_tokens[:, None].to(device, dtype)  # one identity per sample: (B, 1, num_tokens, dim)
    invert_scale = config.controlnet_scale if config.invert_with_landmarks else 0.0

    def inversion_noise(latents, timestep):
        return pipe.predict_noise(latents, timestep, text, control, controlnet_conditioning_scale=invert_scale)

    def restoration_noise(latents, timestep):
        return pipe.predict_noise(
            latents, timestep, guided_text, control, id_embeds=tokens, id_scale=config.id_scale,
            controlnet_conditioning_scale=config.controlnet_scale, guidance_scale=config.guidance_scale,
        )

    fusion = SelfAttentionFusion(latent_mask.to(dtype)) if config.fuse_self_attention else None
    hooks = self_attention_fusion(pipe.unet, fusion) if fusion is not None else nullcontext()
    with _landmark_controlnet(pipe), hooks:
        trajectory = ddim_invert(
            inversion_noise, z0, pipe.scheduler.config, config.steps, config.inversion_refine_iters, fusion, progress
        )
        latents = ddim_denoise(
            restoration_noise, trajectory, pipe.scheduler.config, latent_mask.to(dtype), fusion,
            config.fuse_latents, progress,
        )
    if fusion is not None:
        logger.debug("DIIR self-attention cache: %.1f MiB for %d faces", fusion.cache_bytes() / 2**20, batch)
    decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(decoded, output_type="pil")


def model_steps(config: DIIRConfig, faces: int) -> int:
    """Progress units of a restoration: one per inversion and per denoising step, per batch."""
    batch = config.batch_size or max(faces, 1)
    return math.ceil(faces / batch) * config.steps * 2


def _run_batches(pipe, jobs: list[_FaceJob], tokens: Tensor, config: DIIRConfig, progress) -> list[Image.Image]:
    size = config.batch_size or len(jobs)
    total, done = model_steps(config, len(jobs)), 0

    def tick():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    restored = []
    for start in range(0, len(jobs), size):
        chunk = jobs[start : start + size]
        restored += restore_crops(
            pipe,
            [job.crop for job in chunk],
            [job.condition for job in chunk],
            np.stack([job.mask for job in chunk]),
            tokens[[job.reference for job in chunk]],
            config,
            tick,
        )
    return restored


def _prompt_embeds(pipe, config: DIIRConfig, batch: int, device) -> tuple[Tensor, Tensor]:
    """(text for inversion (B, L, D), text for restoration: [negative; positive] when guided)."""
    guided = config.guidance_scale > 1.0
    positive, negative = pipe.encode_prompt(config.prompt, device, batch, guided, config.negative_prompt)
    return positive, torch.cat([negative, positive]) if guided else positive


@contextmanager
def _landmark_controlnet(pipe) -> Iterator[None]:
    """Use `pipe.landmark_controlnet` (hub profile) as the ControlNet while restoring; else the pipeline's own
    ControlNet, whose landmark mode is the same model fed a landmark image (tiny and magicid profiles)."""
    landmark = getattr(pipe, "landmark_controlnet", None)
    if landmark is None:
        yield
        return
    original = pipe.controlnet
    pipe.controlnet = landmark
    try:
        yield
    finally:
        pipe.controlnet = original


def _resolution(pipe, config: DIIRConfig) -> int:
    return config.resolution or pipe.native_side


def parse_assignment(spec: str | None, num_references: int) -> list[int | None] | None:
    """Who each small face is (largest first), as a user writes it: '2, off, 1' -> [1, None, 0] (reference
    indices); None when `spec` is empty (then faces are matched by similarity)."""
    if not spec or not spec.strip():
        return None
    assignment: list[int | None] = []
    for part in (piece.strip().lower() for piece in spec.split(",")):
        if part in ("off", "none", "-"):
            assignment.append(None)
        elif part.isdigit() and 1 <= int(part) <= num_references:
            assignment.append(int(part) - 1)
        else:
            raise InvalidSettingError(
                f"Face {len(assignment) + 1} is given as {part[:20]!r}: use a reference number (1 to {num_references}) or off"
            )
    return assignment


def _match_references(analysis: ImageAnalysis, faces, references, identity_encoder, assignment, messages, config=None) -> list[tuple]:
    """Per face: (reference index or None, similarity to it or None).

    With an `assignment`, that. Otherwise each face goes to the reference it resembles most, one face per reference
    (a global assignment) unless `config.reuse_references`, and only above `config.min_similarity` (default: the
    embedder's same-person threshold): a stranger is never restored as somebody else. Faces left alone are named
    in `messages`."""
    if assignment is not None:
        if len(assignment) != len(faces):
            raise MagicIDError(f"Who is who names {len(assignment)} faces, but the image has {len(faces)} small faces: give one entry per face, largest first")
        for reference in assignment:
            if reference is not None and not 0 <= reference < len(references):
                raise MagicIDError(f"Face assigned to reference {reference}, but only {len(references)} given")
        return [(reference, None) for reference in assignment]
    from scipy.optimize import linear_sum_assignment

    from magicid.facesim import same_person_threshold

    config = config or DIIRConfig()
    embedder = identity_encoder.embedder
    floor = same_person_threshold(embedder) if config.min_similarity is None else config.min_similarity
    embeddings = np.stack(analysis.embeddings(embedder, faces))
    similarity = embeddings @ np.stack([reference.embedding for reference in references]).T
    if config.reuse_references:
        chosen = dict(enumerate(similarity.argmax(axis=1)))
    else:
        chosen = dict(zip(*linear_sum_assignment(-similarity)))
    matches = []
    for index, face in enumerate(faces):
        reference = chosen.get(index)
        if reference is not None and similarity[index, reference] >= floor:
            matches.append((int(reference), float(similarity[index, reference])))
            continue
        matches.append((None, None))
        best = int(similarity[index].argmax())
        messages.append(_unmatched_message(index, face, references[best], similarity[index, best], floor))
    return matches


def _unmatched_message(index: int, face, closest, similarity: float, floor: float) -> str:
    name = getattr(closest, "name", "") or "the closest reference"
    return (f"Face {index + 1} ({round(face.size)} px) left as it is: it resembles no unused reference enough "
            f"({name} {similarity:.2f}, needs {floor:.2f})")  # fmt: skip


def _prepare_face(image, index, face: Face, reference, similarity, resolution, config: DIIRConfig) -> _FaceJob:
    """Crop with margin at the model resolution, the face's landmarks drawn as the condition, and M_p."""
    crop_box = _crop_box(face, config.crop_margin)
    scale = resolution / (crop_box[2] - crop_box[0])
    crop = _crop_square(image, crop_box).resize((resolution, resolution), Image.Resampling.LANCZOS)
    offset = np.tile(crop_box[:2], 2).astype(np.float64)
    local = dataclasses.replace(
        face, box=(face.box - offset) * scale, kps5=(face.kps5 - crop_box[:2]) * scale, landmarks=None
    )
    points = face_landmarks(crop, local)
    mask = face_region_mask(crop, local, landmarks=points, blur_px=config.mask_blur_px)
    return _FaceJob(
        index=index, face=face, reference=reference, similarity=similarity, crop_box=crop_box, crop=crop,
        condition=draw_face_landmarks([points], resolution, resolution), mask=mask.astype(np.float32),
    )


def _crop_box(face: Face, margin: float) -> np.ndarray:
    """Square box around the face, grown by `margin` x its size on each side, in whole image pixels."""
    side = max(8, math.ceil(face.size * (1 + 2 * margin)))
    x0, y0 = np.round(face.center - side / 2).astype(int)
    return np.array([x0, y0, x0 + side, y0 + side])


def _visible_part(box: np.ndarray, size: tuple[int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The part of `box` inside the image: its image coordinates and the same region in box coordinates."""
    width, height = size
    x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
    x1, y1 = min(int(box[2]), width), min(int(box[3]), height)
    return (x0, y0, x1, y1), (x0 - int(box[0]), y0 - int(box[1]), x1 - int(box[0]), y1 - int(box[1]))


def _crop_square(image: Image.Image, box: np.ndarray) -> Image.Image:
    """The square crop, with mirrored borders where it reaches past the image (no black bars for the model)."""
    (x0, y0, x1, y1), (cx0, cy0, cx1, cy1) = _visible_part(box, image.size)
    side = int(box[2] - box[0])
    region = np.asarray(image.convert("RGB"))[y0:y1, x0:x1]
    padded = cv2.copyMakeBorder(region, cy0, side - cy1, cx0, side - cx1, cv2.BORDER_REFLECT_101)
    return Image.fromarray(padded)


def _paste_back(pixels: np.ndarray, job: _FaceJob, restored: Image.Image, references, config) -> RestoredFace:
    """Colour-match the restored crop to the original inside M_p and blend it in with a feathered mask, in place."""
    side = int(job.crop_box[2] - job.crop_box[0])
    before = _crop_square(Image.fromarray(pixels), job.crop_box)
    original = np.asarray(before, dtype=np.float32)
    mask = cv2.resize(job.mask, (side, side), interpolation=cv2.INTER_AREA)
    new = np.asarray(restored.resize((side, side), Image.Resampling.LANCZOS), dtype=np.float32)
    new = _match_colour(new, original, mask)
    paste = _feathered(mask, config.paste_dilate_px)
    blended = np.clip(np.round(original + (new - original) * paste[..., None]), 0, 255).astype(np.uint8)
    composite = np.where(paste[..., None] > 0, blended, original.astype(np.uint8))
    (x0, y0, x1, y1), (cx0, cy0, cx1, cy1) = _visible_part(job.crop_box, (pixels.shape[1], pixels.shape[0]))
    pixels[y0:y1, x0:x1] = composite[cy0:cy1, cx0:cx1]
    reference = references[job.reference]
    return RestoredFace(
        index=job.index, face=job.face, reference=job.reference, identity=reference.name or f"#{job.reference + 1}",
        similarity_before=job.similarity, similarity_after=None, crop_box=job.crop_box, paste_mask=paste, before=before,
        after=Image.fromarray(composite), landmarks=job.condition,
        parsing_mask=Image.fromarray(np.round(job.mask * 255).astype(np.uint8)),
    )


def _match_colour(new: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-channel mean/std of `new` inside the mask moved to those of `original` (pixel-space MaskedAdaIN)."""
    if mask.sum() < 1:
        return new
    as_tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]  # noqa: E731
    matched = mgff.masked_adain(as_tensor(new), as_tensor(original), torch.from_numpy(mask)[None, None])
    return matched[0].numpy().transpose(1, 2, 0)


def _feathered(mask: np.ndarray, dilate_px: int) -> np.ndarray:
    """The paste mask: M_p grown by `dilate_px` and feathered; exactly 0 beyond that, so those pixels stay."""
    grown = cv2.dilate(mask, np.ones((2 * dilate_px + 1,) * 2, np.uint8)) if dilate_px > 0 else mask
    feathered = cv2.GaussianBlur(grown, (0, 0), sigmaX=max(dilate_px / 2, 0.5)) if dilate_px > 0 else grown
    feathered = np.minimum(feathered, grown)  # feathering only softens inward: the support stays that of `grown`
    return np.where(feathered < 1 / 255, 0, feathered).astype(np.float32)


def _debug_views(face: RestoredFace) -> list[tuple[Image.Image, str]]:
    label = f"face {face.index + 1} ({face.identity})"
    preview = (DEBUG_PREVIEW_PX, DEBUG_PREVIEW_PX)
    pair = Image.new("RGB", (2 * DEBUG_PREVIEW_PX, DEBUG_PREVIEW_PX))
    pair.paste(face.before.resize(preview, Image.Resampling.LANCZOS), (0, 0))
    pair.paste(face.after.resize(preview, Image.Resampling.LANCZOS), (DEBUG_PREVIEW_PX, 0))
    return [
        (face.before.resize(preview, Image.Resampling.LANCZOS), f"{label}: crop"),
        (face.landmarks, f"{label}: landmarks"),
        (face.parsing_mask.convert("RGB"), f"{label}: face mask M_p"),
        (pair, f"{label}: before / after"),
    ]


AFTER_MATCH_IOU = 0.3  # a face detected in the result counts as the restored one if it overlaps its box this much


def _measure_after(result: RestorationResult, references, embedder) -> None:
    """Face similarity of each restored face to its reference, on the face detected in the final image where it was
    (None when no face is found there: the restoration did not produce one). The final image's analysis is kept in
    `result.analysis`."""
    from magicid.face_regions import iou

    result.analysis = ImageAnalysis(result.image, limits=result.analysis.limits)
    detected = result.analysis.faces
    for face in result.faces:
        overlaps = [iou(candidate.box, face.face.box) for candidate in detected]
        if not overlaps or max(overlaps) < AFTER_MATCH_IOU:
            face.similarity_after = None
            continue
        found = detected[int(np.argmax(overlaps))]
        embedding = result.analysis.embedding(embedder, found)
        face.similarity_after = float(np.dot(embedding, references[face.reference].embedding))


def _face_message(face: RestoredFace, threshold: float) -> str:
    size = round(face.face.size)
    if face.similarity_after is None:
        after = "no face is found there after restoration"
    else:
        after = f"similarity to the reference {face.similarity_after:.2f} (same person from {threshold:.2f})"
    before = "" if face.similarity_before is None else f" (before: {face.similarity_before:.2f})"
    return f"Restored face {face.index + 1} ({size} px) as {face.identity}: {after}{before}"
