"""Typed settings. Defaults are the paper's (MagicID, "Implement Details")."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field


PAPER_STEPS = 30
PAPER_GUIDANCE = 5.0
PAPER_SMALL_FACE_PX = 100
PAPER_RESOLUTION = 512  # SD1.5 base models: the side the paper generates and restores at
PROFILES = ("tiny", "mini", "hub", "magicid")


@dataclass
class GenerationConfig:
    """One call of the generator."""

    prompt: str = ""
    negative_prompt: str = "lowres, bad anatomy, blurry, deformed face, watermark"
    steps: int = PAPER_STEPS
    guidance_scale: float = PAPER_GUIDANCE
    id_scale: float = 1.0
    controlnet_scale: float = 1.0
    width: int = 512
    height: int = 512
    seed: int = 0
    num_images: int = 1
    restore_small_faces: bool | None = None  # None: on when faces will be small (full-body sizes)
    restore_threshold_px: int = PAPER_SMALL_FACE_PX  # DIIR restores faces smaller than this (px)
    masked_id_attention: bool = True  # MGMICA (Alg. 1): each F_id only inside its person's mask; False: the ablation


@dataclass
class DIIRConfig:
    """DDIM Inversion based ID Restoration (Alg. 2)."""

    threshold_px: int = PAPER_SMALL_FACE_PX  # restore faces whose box is below threshold x threshold
    steps: int = PAPER_STEPS
    id_scale: float = 1.0
    controlnet_scale: float = 1.0
    guidance_scale: float = 1.0  # fidelity to the cached features matters more than prompt adherence here
    crop_margin: float = 0.6  # crop = face box grown by this fraction on each side
    fuse_latents: bool = True  # MGFF on Z_t (Alg. 2, line 7)
    fuse_self_attention: bool = True  # MGFF on self-attention features (Alg. 2, line 5)
    mask_blur_px: int = 7
    seed: int = 0
    resolution: int | None = None  # side of the face crop fed to the model; None: the model's native size (512)
    prompt: str = "a detailed photo of a person's face"
    negative_prompt: str = "blurry, deformed face, lowres"  # used only when guidance_scale > 1
    inversion_refine_iters: int = 0  # fixed-point refinements per DDIM-inversion step (exact round trip, costlier)
    invert_with_landmarks: bool = False  # also feed the landmark ControlNet during inversion (about +35% compute)
    paste_dilate_px: int = 4  # the paste-back mask is the face mask grown by this (in image pixels), then feathered
    batch_size: int | None = None  # faces per model call; None: all faces of the image at once
    # Matching faces to references when no assignment is given: a face is restored only as a reference it resembles
    # at least this much (cosine; None: the embedder's same-person threshold), and each reference takes one face
    # unless `reuse_references`. Other faces are left as they are, and the result says so.
    min_similarity: float | None = None
    reuse_references: bool = False


@dataclass
class ProfileConfig:
    """Which weights to load. Every id can be overridden by env var (MAGICID_<FIELD>) or CLI flag."""

    name: str = "tiny"
    base_model: str = "SG161222/Realistic_Vision_V4.0_noVAE"
    vae: str | None = "stabilityai/sd-vae-ft-mse"
    openpose_controlnet: str = "lllyasviel/control_v11p_sd15_openpose"
    landmark_controlnet: str = "CrucibleAI/ControlNetMediaPipeFace"
    landmark_controlnet_subfolder: str | None = "diffusion_sd15"
    ip_adapter_repo: str = "h94/IP-Adapter-FaceID"
    ip_adapter_weight: str = "ip-adapter-faceid-plusv2_sd15.bin"
    image_encoder: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    magicid_weights: str | None = None  # local folder or hub repo written by train/
    insightface_root: str | None = None  # folder holding models/buffalo_l (preferred: IP-Adapter-FaceID used it) or models/antelopev2
    device: str | None = None  # None: cuda if available, else cpu
    dtype: str | None = None  # None: float16 on cuda, float32 on cpu

    @classmethod
    def from_env(cls, name: str | None = None, **overrides) -> ProfileConfig:
        """Profile `name` (default: `default_profile_name()`) with MAGICID_* env overrides applied."""
        config = cls(name=name or default_profile_name())
        for key in config.__dataclass_fields__:
            value = os.environ.get(f"MAGICID_{key.upper()}")
            if value is not None and key != "name":
                setattr(config, key, value)
        for key, value in overrides.items():
            if value is not None:
                setattr(config, key, value)
        if config.name not in PROFILES:
            raise ValueError(f"Unknown profile {config.name!r}; choose one of {', '.join(PROFILES)}.")
        return config


def default_profile_name() -> str:
    """MAGICID_PROFILE if set; else `hub` on a Space or where the hub profile's weights are in the local Hugging
    Face cache (as a first `hub` run or `preload_from_hub` leaves them); else the shipped, trained `mini` profile (the
    untrained `tiny` one if its weights are missing)."""
    if os.environ.get("MAGICID_PROFILE"):
        return os.environ["MAGICID_PROFILE"]
    if os.environ.get("SPACE_ID"):
        return "hub"
    if hub_weights_cached():
        return "hub"
    from magicid.mini import WEIGHTS_DIR

    return "mini" if (WEIGHTS_DIR / "magicid.json").is_file() else "tiny"


def hub_weights_cached(config: ProfileConfig | None = None) -> bool:
    """Whether files the hub profile's loader reads are in the local Hub cache: the base model's UNet config, the
    OpenPose ControlNet's config and the IP-Adapter weights (the three downloads it cannot start without)."""
    from huggingface_hub import try_to_load_from_cache

    config = config or ProfileConfig(name="hub")
    needed = [(config.base_model, "unet/config.json"), (config.openpose_controlnet, "config.json"),
              (config.ip_adapter_repo, config.ip_adapter_weight)]  # fmt: skip
    return all(isinstance(try_to_load_from_cache(repo, filename), str) for repo, filename in needed)


@dataclass
class Limits:
    """Input limits that keep one user's request from taking the machine down."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 50_000_000  # larger images are refused; Pillow's own bomb check is at ~89M
    detection_max_side: int = 1280  # images are downscaled to this for detection, coordinates mapped back
    min_image_side: int = 32
    max_identities: int = 6
    min_output_side: int = 512  # generated images: each side a multiple of 8 in [min_output_side, max_output_side]
    max_output_side: int = 1024
    max_steps: int = 150
    max_images_per_call: int = 8
    max_guidance: float = 30.0
    max_strength: float = 5.0  # ID strength and ControlNet / landmark strength
    max_seed: int = 2**32 - 1
    max_aspect_ratio: float = 12.0  # longer side / shorter side of an uploaded image
    max_restore_resolution: int = 1024  # DIIR face-crop side
    max_faces_per_restore: int = 8  # DIIR faces in one request (each costs a full inversion + denoising)
    session_ttl_s: float = 3600.0  # the app forgets a session's photos and results this long after its last use
    max_sessions: int = 200  # sessions whose state the app keeps at once; the oldest are dropped first
    size_choices: tuple[tuple[int, int], ...] = field(
        default=((512, 512), (512, 768), (768, 512), (768, 768), (768, 1024), (1024, 768))
    )


def check_number(name: str, value, low: float, high: float) -> None:
    """Raise `InvalidSettingError` unless `value` is a finite number in [low, high] (one home for CLI, API, app)."""
    from magicid.errors import InvalidSettingError

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidSettingError(f"{name} must be a finite number from {low:g} to {high:g}")
    if not low <= value <= high:
        raise InvalidSettingError(f"{name} {value:g} is out of range: use {low:g} to {high:g}")


def check_whole(name: str, value, low: int, high: int) -> None:
    from magicid.errors import InvalidSettingError

    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSettingError(f"{name} must be a whole number from {low} to {high}")
    check_number(name, value, low, high)


def validate_generation_config(config: GenerationConfig, limits: Limits) -> None:
    """Raise `InvalidSettingError` (one line) for generation settings the model cannot run."""
    from magicid.errors import InvalidSettingError

    if not config.prompt.strip():
        raise InvalidSettingError("Write a prompt describing the photo (e.g. 'two friends at the beach, golden hour')")
    low, high = limits.min_output_side, limits.max_output_side
    for side in ("width", "height"):
        value = getattr(config, side)
        check_whole(side, value, low, high)
        if value % 8:
            raise InvalidSettingError(f"{side} {value} is not supported: use a multiple of 8 from {low} to {high}")
    check_whole("steps", config.steps, 1, limits.max_steps)
    check_whole("num_images", config.num_images, 1, limits.max_images_per_call)
    check_whole("seed", config.seed, 0, limits.max_seed)
    check_number("guidance", config.guidance_scale, 0, limits.max_guidance)
    check_number("ID strength", config.id_scale, 0, limits.max_strength)
    check_number("ControlNet strength", config.controlnet_scale, 0, limits.max_strength)
    check_whole("restore threshold (px)", config.restore_threshold_px, 1, limits.max_output_side)


def validate_diir_config(config: DIIRConfig, limits: Limits) -> None:
    """Raise `InvalidSettingError` (one line) for restoration settings the model cannot run."""
    from magicid.errors import InvalidSettingError

    check_whole("threshold (px)", config.threshold_px, 1, 4096)
    check_whole("steps", config.steps, 1, limits.max_steps)
    check_whole("seed", config.seed, 0, limits.max_seed)
    check_number("ID strength", config.id_scale, 0, limits.max_strength)
    check_number("landmark strength", config.controlnet_scale, 0, limits.max_strength)
    check_number("guidance", config.guidance_scale, 0, limits.max_guidance)
    if config.min_similarity is not None:
        check_number("minimum similarity", config.min_similarity, -1, 1)
    if config.resolution is not None:
        check_whole("resolution", config.resolution, 64, limits.max_restore_resolution)
        if config.resolution % 8:
            raise InvalidSettingError(f"resolution {config.resolution}: use a multiple of 8 from 64 to "
                                      f"{limits.max_restore_resolution}")
