"""Training configs: typed dataclasses with the paper's defaults ("Implement Details"), plus the tiny CPU config.

`--config` takes a name (`paper`, `tiny`) or a JSON file whose keys override the `paper` defaults, or those of the
config named by its optional `"base_config"` key (e.g. `{"base_config": "tiny", "resolution": 512}`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from magicid.errors import TrainingDataError
from train.losses import is_clone_step


CONDITIONS = ("landmarks", "skeleton", "all")


@dataclass
class Stage:
    """One MMF stage: which condition image the ControlNet sees, for how many iterations."""

    name: str
    condition: str  # "landmarks", "skeleton", or "all" (per sample: landmarks, skeleton or both drawn together)
    steps: int


def paper_stages() -> list[Stage]:
    return [Stage("landmark-only", "landmarks", 50_000), Stage("skeleton", "skeleton", 100_000),
            Stage("all", "all", 1_000_000)]  # fmt: skip


@dataclass
class MMFConfig:
    """Multi-Mode Fusion training. Defaults: the paper (RealisticVision V4 base, Adam 1e-4, batch 128 on 8 GPUs)."""

    name: str = "paper"
    base: str = "SG161222/Realistic_Vision_V4.0_noVAE"  # "tiny", "mini", a diffusers SD1.5 folder, or a hub id
    base_unet: str | None = None  # base "mini": the folder of its base UNet (None: the shipped assets/mini-base/unet)
    vae: str | None = "stabilityai/sd-vae-ft-mse"
    image_encoder: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    resolution: int = 512
    train_batch_size: int = 16  # per process: 16 x 8 GPUs = the paper's 128
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    new_layer_lr_scale: float = 1.0  # zero convolutions, hint encoder, ID projections, resampler: lr x this
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.0  # Adam, as in the paper (not AdamW's decoupled decay)
    max_grad_norm: float = 1.0
    lr_warmup_steps: int = 0
    mixed_precision: str = "fp16"  # "no", "fp16" or "bf16"
    gradient_checkpointing: bool = False
    stages: list[Stage] = field(default_factory=paper_stages)
    clone_every: int = 10  # Eq. 4: Clone Face Tuning and L_cfa when mod(iter, 10) = 0, in the final stage
    cfa_weight: float = 0.2  # Eq. 4's lambda
    cfa_min_resolution: int = 32  # cross-attention maps of at least this many cells per side enter L_cfa
    null_text_prob: float = 0.1
    reframe: bool = False  # random crop scale and face position (train.dataset.Reframe), for aligned face crops
    id_drop_prob: float = 0.05  # F_id replaced by zero tokens, as the unconditional CFG branch gets (see train_mmf)
    num_id_tokens: int = 4
    seed: int = 0
    dataloader_num_workers: int = 2
    shuffle_buffer: int = 512
    checkpointing_steps: int = 5_000
    checkpoints_total_limit: int | None = 3
    validation_steps: int = 5_000
    validation_inference_steps: int = 30
    validation_guidance_scale: float = 5.0
    num_validation_images: int = 2
    log_every: int = 50
    find_unused_parameters: bool = False  # set True if a DDP run reports unused parameters

    @property
    def total_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    def stage_at(self, step: int) -> Stage:
        """The stage iteration `step` (0-based) belongs to; the last stage continues past the schedule."""
        end = 0
        for stage in self.stages:
            end += stage.steps
            if step < end:
                return stage
        return self.stages[-1]

    def is_clone_step(self, step: int) -> bool:
        """Clone Face Tuning with `L_cfa` (Eq. 4) at this iteration: every `clone_every` in the final stage."""
        final_stage_start = sum(stage.steps for stage in self.stages[:-1])
        return step >= final_stage_start and is_clone_step(step, self.clone_every)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MMFConfig:
        known = {spec.name for spec in fields(cls)}
        unknown = sorted(set(data) - known - {"base_config"})
        if unknown:
            raise TrainingDataError(f"unknown training config keys {unknown}; see train/configs/__init__.py")
        values = dict(data)
        values.pop("base_config", None)
        if "stages" in values:
            values["stages"] = [Stage(**stage) if isinstance(stage, dict) else stage for stage in values["stages"]]
        config = cls(**values)
        validate(config)
        return config


def validate(config: MMFConfig) -> None:
    for stage in config.stages:
        if stage.condition not in CONDITIONS:
            raise TrainingDataError(f"stage {stage.name!r}: condition must be one of {', '.join(CONDITIONS)}")
    if config.resolution % 16:
        raise TrainingDataError(f"resolution {config.resolution} must be a multiple of 16 (VAE 8x, even clone halves)")
    for name in ("checkpointing_steps", "validation_steps", "log_every", "train_batch_size", "resolution"):
        if getattr(config, name) <= 0:
            raise TrainingDataError(f"{name} must be positive, got {getattr(config, name)}")
    if config.mixed_precision not in ("no", "fp16", "bf16"):
        raise TrainingDataError("mixed_precision must be no, fp16 or bf16")


def paper_config() -> MMFConfig:
    return MMFConfig()


def tiny_config() -> MMFConfig:
    """The tiny profile's models on CPU in minutes. At 256 px the tiny ControlNet's only cross-attention grid is
    16x16, which is the paper's 32x32-at-512 in relative terms, so `cfa_min_resolution` scales with it."""
    return MMFConfig(
        name="tiny",
        base="tiny",
        vae=None,
        image_encoder="tiny",
        resolution=256,
        train_batch_size=2,
        learning_rate=1e-4,
        mixed_precision="no",
        stages=[Stage("landmark-only", "landmarks", 10), Stage("skeleton", "skeleton", 20), Stage("all", "all", 30)],
        cfa_min_resolution=16,
        dataloader_num_workers=0,
        shuffle_buffer=16,
        checkpointing_steps=30,
        checkpoints_total_limit=2,
        validation_steps=30,
        validation_inference_steps=4,
        num_validation_images=1,
        log_every=5,
    )


def mini_config() -> MMFConfig:
    """MagicID-mini's MMF stage on 2 CPU cores in about 2 hours: the shipped base UNet at 128 px, the paper's
    stages, clone tuning and losses at about 1/1,000 of its steps. At 128 px the ControlNet's cross-attention grids are
    8x8 and 4x4, so `cfa_min_resolution` 8 keeps the finer one, as the paper's 32 of 64 latent cells does."""
    return MMFConfig(
        name="mini",
        base="mini",
        vae=None,
        image_encoder="tiny",
        resolution=128,
        train_batch_size=32,
        learning_rate=2e-4,
        new_layer_lr_scale=5.0,  # at one rate, 500 steps left the zero convolutions at ~0.003 and the output unchanged
        mixed_precision="bf16",
        stages=[Stage("landmark-only", "landmarks", 150), Stage("skeleton", "skeleton", 150), Stage("all", "all", 2700)],
        cfa_min_resolution=8,
        reframe=True,  # the crops are aligned: 900 steps on them learned to ignore the (constant) pose condition
        dataloader_num_workers=1,
        shuffle_buffer=1000,
        checkpointing_steps=150,
        checkpoints_total_limit=2,
        validation_steps=300,
        num_validation_images=4,
        log_every=25,
    )


NAMED_CONFIGS = {"paper": paper_config, "tiny": tiny_config, "mini": mini_config}


def load_config(name_or_path: str, **overrides) -> MMFConfig:
    """A named config, or a JSON file of overrides (see the module docstring); then `overrides`."""
    if name_or_path in NAMED_CONFIGS:
        data = NAMED_CONFIGS[name_or_path]().to_dict()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise TrainingDataError(f"--config {name_or_path}: not {' or '.join(NAMED_CONFIGS)} nor a JSON file")
        try:
            user = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise TrainingDataError(f"--config {path}: invalid JSON ({error})") from error
        data = {**NAMED_CONFIGS[user.get("base_config", "paper")]().to_dict(), **user}
    return MMFConfig.from_dict({**data, **overrides})
