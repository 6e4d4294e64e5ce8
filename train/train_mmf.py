"""Multi-Mode Fusion training (paper, "Multi-Mode Fusion Training Strategy" and "Implement Details").

    accelerate launch -m train.train_mmf --config CONFIG --data DIR --out DIR [--max-steps N] [--resume] [--init DIR]

The UNet, VAE, text and CLIP-vision encoders are frozen. Trained: ONE module (`MMFModel`) holding the ControlNet
(initialised from the UNet, with ID cross-attention, Eq. 1) and the ID resampler, so DDP / FSDP / DeepSpeed from
`accelerate config` wrap a single model. Loss: Eq. 3, plus `lambda * L_cfa` on Clone Face Tuning batches every
`clone_every` iterations of the final stage (Eq. 2, 4; the paper's implementation details). Stages pick the
condition image: landmarks, then skeleton, then all.

ID dropout: in `id_drop_prob` of the samples `F_id` is replaced by zero tokens, whose ID attention contributes
exactly nothing (zero keys and values), as IP-Adapter drops its image embedding. At inference the unconditional
CFG branch gets the same zero tokens (`MagicIDPipeline`), so that branch is an input the model was trained on:
the text-and-pose-only ControlNet.

Progress is measured by `L_cldm` on one fixed batch with fixed noise, timesteps and condition (`fixed_batch_loss`),
at the start, at every validation step and at the end (`logs/eval.jsonl`, `TrainResult.eval_losses`): unlike the
training loss, whose timesteps are random, it falls only when the model learns.

Output folder: `checkpoints/checkpoint-N/` (accelerate state, safetensors, plus `magicid/` loadable by the
`magicid` profile), `validation/step-N.png`, `logs/losses.jsonl`, `config.json`, and `final/` (the weights for
`MAGICID_MAGICID_WEIGHTS`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, ProjectConfiguration, set_seed
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents
from PIL import Image, ImageChops
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from magicid.errors import MagicIDError, TrainingDataError
from magicid.mgmica import install_id_attention
from magicid.resampler import IDResampler
from train.clone_face import clone_batch
from train.configs import MMFConfig, load_config
from train.dataset import MMFDataset, Reframe, condition_images
from train.idzoom import iter_shard, shard_paths
from train.losses import IDContributionRecorder, clone_face_attention_loss, diffusion_loss


logger = logging.getLogger(__name__)


class MMFModel(torch.nn.Module):
    """The trainable part: ControlNet with ID cross-attention + ID resampler, as one module for `prepare`."""

    def __init__(self, controlnet: torch.nn.Module, resampler: IDResampler):
        super().__init__()
        self.controlnet = controlnet
        self.resampler = resampler

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        text_embeds: torch.Tensor,
        face_embeds: torch.Tensor,
        clip_embeds: torch.Tensor,
        condition: torch.Tensor,
        id_keep: torch.Tensor | None = None,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """ControlNet residuals (down, mid) for the UNet, with `F_id` in the ControlNet's cross-attention;
        `id_keep` (B,) bool: False drops that sample's `F_id` (zero tokens)."""
        id_tokens = self.resampler(face_embeds, clip_embeds)  # (B, T, D)
        if id_keep is not None:
            id_tokens = id_tokens * id_keep.to(id_tokens.device, id_tokens.dtype).view(-1, 1, 1)
        return self.controlnet(
            noisy_latents,
            timesteps,
            encoder_hidden_states=(text_embeds, [id_tokens.unsqueeze(1).to(text_embeds.dtype)]),
            controlnet_cond=condition,
            return_dict=False,
        )


@dataclass
class FrozenModels:
    """The frozen SD1.5 parts and the input processors."""

    vae: torch.nn.Module
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    image_encoder: torch.nn.Module
    tokenizer: object
    feature_extractor: object
    noise_scheduler: object
    scheduler_config: dict = field(default_factory=dict)


def load_models(config: MMFConfig, id_embeddings_dim: int) -> tuple[FrozenModels, MMFModel]:
    """Frozen SD1.5 parts + a fresh trainable `MMFModel` for `config.base` (`tiny` or an SD1.5 folder/hub id)."""
    from diffusers import ControlNetModel, DDPMScheduler

    from magicid.mini import BASE_UNET_DIR, MINI, mini_base_components
    from magicid.tiny import tiny_image_encoder

    if config.base == MINI:
        parts = mini_base_components(config.base_unet or BASE_UNET_DIR)
        vae, unet, text_encoder, tokenizer = parts["vae"], parts["unet"], parts["text_encoder"], parts["tokenizer"]
        image_encoder, feature_extractor = tiny_image_encoder()
        controlnet = ControlNetModel.from_unet(unet)
        resampler = IDResampler.tiny(id_embeddings_dim, image_encoder.config.hidden_size, unet.config.cross_attention_dim)
        scheduler_config = dict(parts["scheduler"].config)
    elif config.base == "tiny":
        from magicid.tiny import build_tiny_components

        parts = build_tiny_components()
        vae, unet, text_encoder, tokenizer = parts.vae, parts.unet, parts.text_encoder, parts.tokenizer
        image_encoder, feature_extractor = parts.image_encoder, parts.feature_extractor
        controlnet = parts.controlnet
        resampler = IDResampler.tiny(
            id_embeddings_dim, image_encoder.config.hidden_size, unet.config.cross_attention_dim
        )
        scheduler_config = dict(parts.scheduler.config)
    else:
        vae, unet, text_encoder, tokenizer, image_encoder, feature_extractor = _load_pretrained(config)
        controlnet = ControlNetModel.from_unet(unet)
        resampler = IDResampler(
            id_embeddings_dim=id_embeddings_dim,
            clip_embeddings_dim=image_encoder.config.hidden_size,
            cross_attention_dim=unet.config.cross_attention_dim,
            embed_dims=unet.config.cross_attention_dim,  # FaceID-PlusV2's shortcut adds tokens of both widths
        )
        scheduler_config = dict(DDPMScheduler.load_config(config.base, subfolder="scheduler"))
    install_id_attention(controlnet, num_tokens=config.num_id_tokens)
    for frozen in (vae, unet, text_encoder, image_encoder):
        frozen.requires_grad_(False).eval()
    controlnet.train()
    resampler.train()
    frozen_models = FrozenModels(
        vae, unet, text_encoder, image_encoder, tokenizer, feature_extractor,
        DDPMScheduler.from_config(scheduler_config), scheduler_config,
    )  # fmt: skip
    return frozen_models, MMFModel(controlnet, resampler)


def _load_pretrained(config: MMFConfig):
    """SD1.5 parts and the CLIP-vision encoder from local folders or the hub cache (MissingWeightsError if absent)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    from magicid.errors import MissingWeightsError
    from magicid.profiles import local_files_only

    local = local_files_only(config.base)
    try:
        vae = AutoencoderKL.from_pretrained(config.vae, local_files_only=local) if config.vae else (
            AutoencoderKL.from_pretrained(config.base, subfolder="vae", local_files_only=local))  # fmt: skip
        return (
            vae,
            UNet2DConditionModel.from_pretrained(config.base, subfolder="unet", local_files_only=local),
            CLIPTextModel.from_pretrained(config.base, subfolder="text_encoder", local_files_only=local),
            CLIPTokenizer.from_pretrained(config.base, subfolder="tokenizer", local_files_only=local),
            CLIPVisionModelWithProjection.from_pretrained(config.image_encoder, local_files_only=local),
            CLIPImageProcessor(),
        )
    except OSError as error:
        raise MissingWeightsError(
            f"cannot load {config.base} / {config.image_encoder} ({error}); download them or use --config tiny"
        ) from error


NEW_LAYERS = ("controlnet.controlnet_down_blocks.", "controlnet.controlnet_mid_block.", "controlnet.controlnet_cond_embedding.",
              "resampler.", ".to_k_ip.", ".to_v_ip.")  # fmt: skip


def parameter_groups(model: MMFModel, config: MMFConfig) -> list[dict]:
    """The layers MMF adds (zero convolutions, hint encoder, ID projections, resampler) at `new_layer_lr_scale` x the
    learning rate; the encoder copied from the UNet at the learning rate. Scale 1 (the paper): one rate for all."""
    new, copied = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (new if any(part in name for part in NEW_LAYERS) else copied).append(parameter)
    return [{"params": copied, "lr": config.learning_rate},
            {"params": new, "lr": config.learning_rate * config.new_layer_lr_scale}]  # fmt: skip


def dataset_embedding_dim(data_dir: Path) -> tuple[int, str]:
    """Face embedding size and embedder name of a dataset (from its first record)."""
    paths = shard_paths(data_dir)
    if not paths:
        raise TrainingDataError(f"no finished shards (shard-*.tar) in {data_dir}: run python -m train.build_dataset")
    first = next(iter_shard(paths[0]))
    return int(first.embedding.size), first.embedder


def encode_batch(frozen: FrozenModels, batch: dict, weight_dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
    """Latents (x scaling factor), text embeddings and CLIP-vision penultimate states of a batch (no gradients)."""
    with torch.no_grad():
        pixels = batch["pixel_values"].to(device, weight_dtype)
        latents = retrieve_latents(frozen.vae.encode(pixels)) * frozen.vae.config.scaling_factor
        text = frozen.text_encoder(batch["input_ids"].to(device), return_dict=False)[0]
        clip = frozen.image_encoder(
            batch["clip_pixel_values"].to(device, weight_dtype), output_hidden_states=True
        ).hidden_states[-2]
    return {"latents": latents.float(), "text": text, "clip": clip}


def training_step(
    model: torch.nn.Module,
    frozen: FrozenModels,
    batch: dict,
    step: int,
    config: MMFConfig,
    recorder: IDContributionRecorder,
    accelerator: Accelerator,
    weight_dtype: torch.dtype,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Eq. 4 for one batch: on clone steps the batch is cloned side by side and `L_cfa` is added."""
    condition = condition_images(batch, config.stage_at(step).condition, generator)
    clone = config.is_clone_step(step)
    if clone:
        (batch["pixel_values"], condition), regions = clone_batch(
            [batch["pixel_values"], condition], batch["face_box"]
        )
    encoded = encode_batch(frozen, batch, weight_dtype, accelerator.device)
    latents = encoded["latents"]
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    timesteps = torch.randint(0, frozen.noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                              generator=generator).to(latents.device)  # fmt: skip
    noisy = frozen.noise_scheduler.add_noise(latents, noise, timesteps)
    id_keep = torch.rand(latents.shape[0], generator=generator) >= config.id_drop_prob
    with recorder if clone else nullcontext():
        down, mid = model(noisy, timesteps, encoded["text"], batch["face_embeds"].to(accelerator.device),
                          encoded["clip"], condition.to(accelerator.device, weight_dtype), id_keep)  # fmt: skip
    model_pred = frozen.unet(
        noisy.to(weight_dtype), timesteps, encoder_hidden_states=encoded["text"],
        down_block_additional_residuals=[sample.to(weight_dtype) for sample in down],
        mid_block_additional_residual=mid.to(weight_dtype), return_dict=False,
    )[0]  # fmt: skip
    losses = {"l_cldm": diffusion_loss(model_pred, _target(frozen, latents, noise, timesteps))}
    losses["loss"] = losses["l_cldm"]
    if clone:
        aspect = latents.shape[-2] / latents.shape[-1]
        losses["l_cfa"] = clone_face_attention_loss(
            recorder.maps(aspect), regions.m1, regions.m2, config.cfa_min_resolution
        )
        losses["loss"] = losses["l_cldm"] + config.cfa_weight * losses["l_cfa"]  # Eq. 4
        recorder.outputs = []
    return losses


def _target(frozen: FrozenModels, latents, noise, timesteps) -> torch.Tensor:
    if frozen.noise_scheduler.config.prediction_type == "v_prediction":
        return frozen.noise_scheduler.get_velocity(latents, noise, timesteps)
    return noise


@torch.no_grad()
def fixed_batch_loss(model: torch.nn.Module, frozen: FrozenModels, batch: dict, config: MMFConfig,
                     accelerator: Accelerator, weight_dtype: torch.dtype) -> float:  # fmt: skip
    """`L_cldm` of `batch` at fixed noise, evenly spread timesteps and the `all` condition (no ID dropout, no
    clone), leaving torch's RNG as it was: comparable from step to step and between runs."""
    return fixed_batch_losses(model, frozen, batch, config, accelerator, weight_dtype).mean().item()


@torch.no_grad()
def fixed_batch_losses(model: torch.nn.Module, frozen: FrozenModels, batch: dict, config: MMFConfig,
                       accelerator: Accelerator, weight_dtype: torch.dtype, id_from: torch.Tensor | None = None,
                       id_off: bool = False) -> torch.Tensor:  # fmt: skip
    """Per-sample `fixed_batch_loss` (B,). `id_from[i]`: the sample whose `F_id` sample i gets (default its own);
    `id_off`: zero ID tokens for every sample."""
    with rng_untouched(accelerator):
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        condition = condition_images(batch, "all", generator)
        encoded = encode_batch(frozen, batch, weight_dtype, accelerator.device)
        latents = encoded["latents"]
        noise = torch.randn(latents.shape, generator=generator).to(latents.device)
        count = frozen.noise_scheduler.config.num_train_timesteps
        timesteps = torch.linspace(count * 0.05, count * 0.95, latents.shape[0]).long().to(latents.device)
        noisy = frozen.noise_scheduler.add_noise(latents, noise, timesteps)
        face_embeds, clip = batch["face_embeds"].to(accelerator.device), encoded["clip"]
        if id_from is not None:
            face_embeds, clip = face_embeds[id_from.to(face_embeds.device)], clip[id_from.to(clip.device)]
        id_keep = torch.zeros(latents.shape[0], dtype=torch.bool) if id_off else None
        down, mid = model(noisy, timesteps, encoded["text"], face_embeds, clip,
                          condition.to(accelerator.device, weight_dtype), id_keep)  # fmt: skip
        prediction = frozen.unet(
            noisy.to(weight_dtype), timesteps, encoder_hidden_states=encoded["text"],
            down_block_additional_residuals=[sample.to(weight_dtype) for sample in down],
            mid_block_additional_residual=mid.to(weight_dtype), return_dict=False,
        )[0]  # fmt: skip
        error = (prediction.float() - _target(frozen, latents, noise, timesteps).float()) ** 2
        return error.flatten(1).mean(1).cpu()


def id_partners(people: list[str], same_person: bool) -> torch.Tensor:
    """For each sample, the next sample (cyclically) showing the same person (`same_person`) or another; -1: none."""
    count = len(people)
    return torch.tensor([
        next((j % count for j in range(i + 1, i + count) if (people[j % count] == people[i]) == same_person), -1)
        for i in range(count)
    ])  # fmt: skip


def id_losses(model: torch.nn.Module, frozen: FrozenModels, batch: dict, config: MMFConfig,
              accelerator: Accelerator, weight_dtype: torch.dtype) -> dict[str, float | None]:  # fmt: skip
    """`L_cldm` of one fixed batch with each photo's own `F_id`, with that of another photo of the same person, of
    another person, and with none. `id_gap` = other person - own; `identity_gap` = other person - same person, on the
    photos that have both: above 0 when the tokens carry who it is, not only what this photo looks like. None where
    the batch has no such pair."""
    def losses_with(**id_input) -> torch.Tensor:
        return fixed_batch_losses(model, frozen, batch, config, accelerator, weight_dtype, **id_input)

    own = losses_with()
    result = {"l_cldm_own_id": own.mean().item(), "l_cldm_off_id": losses_with(id_off=True).mean().item()}
    people = list(batch["person"])
    same, other = id_partners(people, same_person=True), id_partners(people, same_person=False)
    with_same = losses_with(id_from=same.clamp(min=0)) if (same >= 0).any() else None
    with_other = losses_with(id_from=other.clamp(min=0)) if (other >= 0).any() else None
    result["l_cldm_same_person_id"] = _mean_where(with_same, same >= 0)
    result["l_cldm_other_person_id"] = _mean_where(with_other, other >= 0)
    result["id_gap"] = _mean_where(None if with_other is None else with_other - own, other >= 0)
    both = (same >= 0) & (other >= 0)
    result["identity_gap"] = _mean_where(
        None if with_same is None or with_other is None else with_other - with_same, both)
    return result


def _mean_where(values: torch.Tensor | None, keep: torch.Tensor) -> float | None:
    return None if values is None or not keep.any() else values[keep].mean().item()


def evaluation_batch(config: MMFConfig, data_dir: Path, frozen: FrozenModels) -> dict:
    """The first records of the data, in order, with their captions: the same batch on every process and run."""
    dataset = MMFDataset(data_dir, config.resolution, frozen.tokenizer, frozen.feature_extractor, null_text_prob=0.0,
                         seed=config.seed, shuffle_buffer=1)  # fmt: skip
    return next(iter(DataLoader(dataset, batch_size=config.train_batch_size, num_workers=0)))


def make_accelerator(config: MMFConfig, out_dir: Path) -> Accelerator:
    return Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "logs")),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=config.find_unused_parameters)],
    )


def move_frozen(frozen, device, dtype: torch.dtype) -> None:
    """The frozen models onto `device` in `dtype` (no dtype argument when it is theirs: diffusers warns on no-op casts)."""
    for part in (frozen.vae, frozen.unet, frozen.text_encoder, frozen.image_encoder):
        part.to(device, **({"dtype": dtype} if part.dtype != dtype else {}))


def weight_dtype_of(accelerator: Accelerator) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def make_dataloader(config: MMFConfig, data_dir: Path, frozen: FrozenModels, accelerator: Accelerator,
                    stream: StreamState | None = None) -> DataLoader:  # fmt: skip
    """Each process streams its own part of the shards, so the dataloader is not passed to `prepare`. `stream`:
    continue this process's stream where that state stopped."""
    workers = max(config.dataloader_num_workers, 1)
    start, offset = stream.resume_point(stream_consumers(config, accelerator)) if stream else ({}, 0)
    dataset = MMFDataset(
        data_dir, config.resolution, frozen.tokenizer, frozen.feature_extractor, config.null_text_prob,
        rank=accelerator.process_index, world_size=accelerator.num_processes, seed=config.seed,
        shuffle_buffer=config.shuffle_buffer, start=start, worker_offset=offset % workers,
        reframe=Reframe() if config.reframe else None,
    )  # fmt: skip
    return DataLoader(dataset, batch_size=config.train_batch_size, num_workers=config.dataloader_num_workers)


def stream_consumers(config: MMFConfig, accelerator: Accelerator) -> int:
    """How many streams the data is split into: processes x dataloader workers."""
    return accelerator.num_processes * max(config.dataloader_num_workers, 1)


@dataclass
class StreamState:
    """What a resumed process needs to continue exactly: per consumer (process x dataloader worker) the (epoch,
    position) of its next sample, the batches drawn (the dataloader's workers take turns batch by batch), and the
    generator of the training step's noise, timesteps and condition choice. Saved per process in each checkpoint as
    `data_stream-R.json` and `generator-R.safetensors`."""

    generator: torch.Generator
    next_sample: dict[int, tuple[int, int]] = field(default_factory=dict)
    batches: int = 0
    consumers: int | None = None  # process x worker count the positions refer to

    def record(self, batch: dict, consumers: int) -> None:
        """Count one batch drawn from the dataloader."""
        origins = zip(batch["stream_consumer"].tolist(), batch["stream_epoch"].tolist(),
                      batch["stream_position"].tolist())  # fmt: skip
        for consumer, epoch, position in origins:
            self.next_sample[consumer] = (epoch, position + 1)
        self.batches, self.consumers = self.batches + 1, consumers

    def resume_point(self, consumers: int) -> tuple[dict[int, tuple[int, int]], int]:
        """(start positions, worker offset) for `MMFDataset`; a fresh stream if the process x worker split changed."""
        if self.consumers not in (None, consumers):
            logger.warning("data stream split into %s consumers, now %s: the stream restarts", self.consumers,
                           consumers)  # fmt: skip
            return {}, 0
        return dict(self.next_sample), self.batches

    def save(self, directory: Path, rank: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        data = {"next_sample": {str(c): list(p) for c, p in self.next_sample.items()}, "batches": self.batches,
                "consumers": self.consumers}  # fmt: skip
        (directory / f"data_stream-{rank}.json").write_text(json.dumps(data))
        save_file({"state": self.generator.get_state()}, directory / f"generator-{rank}.safetensors")

    @classmethod
    def load(cls, directory: Path, rank: int, generator: torch.Generator) -> StreamState:
        """The state saved in a checkpoint; one saved before streams were checkpointed restarts the stream."""
        path = directory / f"data_stream-{rank}.json"
        if not path.is_file():
            logger.warning("%s has no data stream state: the data stream restarts", directory)
            return cls(generator)
        data = json.loads(path.read_text())
        generator.set_state(load_file(directory / f"generator-{rank}.safetensors")["state"])
        next_sample = {int(c): (p[0], p[1]) for c, p in data["next_sample"].items()}
        return cls(generator, next_sample, data["batches"], data["consumers"])


def export_weights(directory: Path, model: MMFModel, config: MMFConfig, metadata: dict) -> None:
    """The `magicid` profile's on-disk layout (see `magicid.profiles.save_magicid_weights`)."""
    from magicid.profiles import save_magicid_weights

    # vae None (the base model's own) is written too, so the loader does not fall back to its default VAE
    sources = {"base_model": config.base, "image_encoder": config.image_encoder, "vae": config.vae,
               "training_config": config.name}  # fmt: skip
    save_magicid_weights(directory, model.controlnet, model.resampler, {**metadata, **sources})


TRAINED_PARTS = ("controlnet", "id_attention.safetensors", "resampler")


def load_trained_weights(model: MMFModel, directory: Path) -> int:
    """Start `model` from weights that `export_weights` wrote (e.g. a shipped `assets/mini`), instead of the UNet copy.
    Returns the steps those weights were trained for (their `magicid.json`'s `global_step`, 0 if unknown)."""
    from diffusers import ControlNetModel

    from magicid.mgmica import load_id_attention_state_dict

    directory = Path(directory)
    absent = [name for name in TRAINED_PARTS if not (directory / name).exists()]
    if absent:
        raise TrainingDataError(f"cannot start from {directory.name}: it has no {', '.join(absent)}")
    try:
        controlnet = ControlNetModel.from_pretrained(directory / "controlnet").state_dict()
        missing, unexpected = model.controlnet.load_state_dict(controlnet, strict=False)
        if unexpected or any(".processor." not in key for key in missing):  # ID K/V live in the processors
            raise ValueError(f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        load_id_attention_state_dict(model.controlnet, load_file(directory / "id_attention.safetensors"))
        model.resampler.load_state_dict(IDResampler.from_pretrained(directory / "resampler").state_dict())
    except (OSError, ValueError, RuntimeError) as error:
        raise TrainingDataError(f"cannot start from {directory.name}: {str(error).splitlines()[0]}") from error
    metadata = directory / "magicid.json"
    return int(json.loads(metadata.read_text()).get("global_step", 0)) if metadata.is_file() else 0


def latest_checkpoint(out_dir: Path) -> Path | None:
    checkpoints = sorted((out_dir / "checkpoints").glob("checkpoint-*"), key=_checkpoint_step)
    return checkpoints[-1] if checkpoints else None


def _checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def save_checkpoint(accelerator: Accelerator, config: MMFConfig, out_dir: Path, step: int,
                    stream: StreamState | None = None) -> Path:  # fmt: skip
    """`accelerator.save_state` (safetensors) and this process's `stream` on every process; the main process keeps
    the newest few."""
    path = out_dir / "checkpoints" / f"checkpoint-{step}"
    accelerator.save_state(str(path), safe_serialization=True)
    if stream is not None:
        stream.save(path, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and config.checkpoints_total_limit:
        old = sorted((out_dir / "checkpoints").glob("checkpoint-*"), key=_checkpoint_step)
        for stale in old[: -config.checkpoints_total_limit]:
            shutil.rmtree(stale)
    return path


def is_sharded(accelerator: Accelerator) -> bool:
    """FSDP or DeepSpeed ZeRO-3: no process holds the whole model."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    plugin = accelerator.state.deepspeed_plugin
    return accelerator.distributed_type == DistributedType.DEEPSPEED and plugin.zero_stage == 3


def exportable_model(accelerator: Accelerator, model, rebuild: Callable[[], MMFModel]) -> MMFModel:
    """The full trained `MMFModel` (every process must call this: sharded weights are gathered collectively)."""
    if not is_sharded(accelerator):
        return accelerator.unwrap_model(model)
    state = accelerator.get_state_dict(model)
    fresh = rebuild()
    if accelerator.is_main_process:
        fresh.load_state_dict(state)
    return fresh.to(accelerator.device)


def configure_deepspeed(accelerator: Accelerator, config: MMFConfig) -> None:
    """The dataloader is not prepared (each process streams its shards), so DeepSpeed learns the batch size here."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None and plugin.is_auto("train_micro_batch_size_per_gpu"):
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.train_batch_size


@dataclass
class TrainResult:
    global_step: int
    losses: list[dict]  # one entry per optimisation step of the main process
    final_dir: Path | None
    eval_losses: dict[int, float] = field(default_factory=dict)  # step -> `fixed_batch_loss`


@dataclass
class _Run:
    """What the steps after each optimisation step need."""

    accelerator: Accelerator
    model: torch.nn.Module  # as prepared (DDP / FSDP / DeepSpeed wrapper)
    frozen: FrozenModels
    config: MMFConfig
    data_dir: Path
    out_dir: Path
    total_steps: int
    meta: dict
    rebuild: Callable[[], MMFModel]  # a fresh model to gather sharded weights into
    stream: StreamState | None = None
    eval_batch: dict | None = None
    eval_losses: dict[int, float] = field(default_factory=dict)
    steps_before: int = 0  # what the `--init` weights were trained for

    def weights_metadata(self, step: int) -> dict:
        """`global_step` counts every step the weights were trained for, `run_step` this run's (after `--init`)."""
        return {**self.meta, "global_step": self.steps_before + step, **({"run_step": step} if self.steps_before else {})}

    def evaluate(self, step: int) -> None:
        """Record `fixed_batch_loss` at `step`, and `id_losses` (every process computes it; the main process logs it)."""
        losses = id_losses(self.model, self.frozen, self.eval_batch, self.config, self.accelerator,
                           weight_dtype_of(self.accelerator))  # fmt: skip
        self.eval_losses[step] = losses["l_cldm_own_id"]
        if self.accelerator.is_main_process:
            entry = {"step": step, "l_cldm_fixed_batch": losses.pop("l_cldm_own_id"), **losses}
            with (self.out_dir / "logs" / "eval.jsonl").open("a") as log:
                log.write(json.dumps(entry) + "\n")


def train(config: MMFConfig, data_dir: str | Path, out_dir: str | Path, max_steps: int | None = None,
          resume: bool = False, on_batch: Callable[[dict], None] | None = None,
          init: str | Path | None = None) -> TrainResult:  # fmt: skip
    """Run MMF training (every process of an `accelerate launch` calls this). `on_batch` sees every batch this
    process draws (e.g. its `key`s), before it is used. `init`: exported weights to start from (a checkpoint
    that `resume` finds wins over them)."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    accelerator = make_accelerator(config, out_dir)
    configure_deepspeed(accelerator, config)
    set_seed(config.seed + accelerator.process_index)
    id_dim, embedder_name = dataset_embedding_dim(data_dir)
    frozen, model = load_models(config, id_dim)
    steps_before = load_trained_weights(model, init) if init is not None else 0
    weight_dtype = weight_dtype_of(accelerator)
    if config.gradient_checkpointing:
        model.controlnet.enable_gradient_checkpointing()
    recorder = IDContributionRecorder(model.controlnet)
    optimizer = torch.optim.Adam(
        parameter_groups(model, config), lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon, weight_decay=config.weight_decay,
    )  # fmt: skip
    model, optimizer = accelerator.prepare(model, optimizer)
    move_frozen(frozen, accelerator.device, weight_dtype)
    meta = {"id_embeddings_dim": id_dim, "face_embedder": embedder_name, "num_tokens": config.num_id_tokens,
            "resolution": config.resolution}  # fmt: skip
    run = _Run(accelerator, model, frozen, config, data_dir, out_dir,
               max_steps if max_steps is not None else config.total_steps, meta,
               rebuild=lambda: load_models(config, id_dim)[1], steps_before=steps_before)  # fmt: skip
    global_step, run.stream, batches = _start_stream(run, resume)
    if accelerator.is_main_process:
        (out_dir / "logs").mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    with rng_untouched(accelerator):  # a dataloader draws its seed from torch's RNG
        run.eval_batch = evaluation_batch(config, data_dir, frozen)
    if global_step == 0:
        run.evaluate(0)
    consumers = stream_consumers(config, accelerator)
    losses = []
    while global_step < run.total_steps:
        batch = next(batches)
        run.stream.record(batch, consumers)
        if on_batch is not None:
            on_batch(batch)
        with accelerator.accumulate(model):
            step_losses = training_step(model, frozen, batch, global_step, config, recorder, accelerator,
                                        weight_dtype, run.stream.generator)  # fmt: skip
            accelerator.backward(step_losses["loss"])
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            continue
        entry = _log_entry(accelerator, step_losses, global_step, config)
        losses.append(entry)
        global_step += 1
        _after_step(run, global_step, entry)
    return _finish(run, global_step, losses)


def _start_stream(run: _Run, resume: bool):
    """(first step, stream state, batch iterator): from the start, or (`resume`) where the newest checkpoint stopped.

    The iterator is created before `load_state`: creating it draws from torch's RNG, which must then be restored
    to its state at the checkpoint."""
    accelerator, rank = run.accelerator, run.accelerator.process_index
    checkpoint = _resume_checkpoint(run.out_dir) if resume else None
    step = _checkpoint_step(checkpoint) if checkpoint else 0
    generator = torch.Generator().manual_seed(run.config.seed * 7919 + rank + step)
    stream = StreamState.load(checkpoint, rank, generator) if checkpoint else StreamState(generator)
    batches = iter(make_dataloader(run.config, run.data_dir, run.frozen, accelerator, stream))
    if checkpoint:
        accelerator.load_state(str(checkpoint))
        logger.info("resumed from %s", checkpoint)
    return step, stream, batches


def _resume_checkpoint(out_dir: Path) -> Path | None:
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is None:
        logger.warning("--resume: no checkpoint in %s, starting from step 0", out_dir / "checkpoints")
    return checkpoint


def rng_untouched(accelerator: Accelerator) -> AbstractContextManager:
    """Export and validation leave torch's RNG as it was, so training after them continues as a resumed run does."""
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def _log_entry(accelerator: Accelerator, losses: dict, step: int, config: MMFConfig) -> dict:
    reduced = {
        name: accelerator.reduce(value.detach().float(), reduction="mean").item() for name, value in losses.items()
    }
    entry = {"step": step, "stage": config.stage_at(step).name, **reduced}
    if not all(math.isfinite(value) for value in reduced.values()):
        raise FloatingPointError(f"non-finite loss at step {step}: {reduced}")
    return entry


def _after_step(run: _Run, step: int, entry: dict) -> None:
    accelerator, config = run.accelerator, run.config
    if accelerator.is_main_process:
        with (run.out_dir / "logs" / "losses.jsonl").open("a") as log:
            log.write(json.dumps(entry) + "\n")
        if step % config.log_every == 0:
            logger.info("step %d/%d %s", step, run.total_steps, entry)
    last = step == run.total_steps
    checkpoint = step % config.checkpointing_steps == 0 or last
    validate = step % config.validation_steps == 0 or last
    path = save_checkpoint(accelerator, config, run.out_dir, step, run.stream) if checkpoint else None
    if checkpoint or validate:
        with rng_untouched(accelerator):
            _export_and_validate(run, step, path, validate)
    if validate:
        run.evaluate(step)


def _export_and_validate(run: _Run, step: int, checkpoint: Path | None, validate: bool) -> None:
    accelerator, config = run.accelerator, run.config
    trained = exportable_model(accelerator, run.model, run.rebuild)
    if accelerator.is_main_process and checkpoint:
        export_weights(checkpoint / "magicid", trained, config, run.weights_metadata(step))
    if accelerator.is_main_process and validate:
        stage = config.stage_at(step - 1)
        log_validation(trained, run.frozen, config, run.data_dir, run.out_dir / "validation", step, stage.condition)
    accelerator.wait_for_everyone()


def _finish(run: _Run, step: int, losses: list[dict]) -> TrainResult:
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    trained = exportable_model(accelerator, run.model, run.rebuild)
    final_dir = run.out_dir / "final"
    if accelerator.is_main_process:
        export_weights(final_dir, trained, run.config, run.weights_metadata(step))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(global_step=step, losses=losses, final_dir=final_dir, eval_losses=dict(run.eval_losses))


@torch.no_grad()
def log_validation(model: MMFModel, frozen: FrozenModels, config: MMFConfig, data_dir: Path, out_dir: Path,
                   step: int, condition: str = "all") -> list[Path]:  # fmt: skip
    """Generate from the first records' condition images (of the stage's `condition`) and identities; save
    `step-N-i.png` under `out_dir`."""
    from diffusers import DDIMScheduler

    from magicid.pipeline import MagicIDPipeline

    pipe = MagicIDPipeline(
        vae=frozen.vae, text_encoder=frozen.text_encoder, tokenizer=frozen.tokenizer, unet=frozen.unet,
        controlnet=model.controlnet, scheduler=DDIMScheduler.from_config(frozen.scheduler_config),
        image_encoder=frozen.image_encoder, feature_extractor=frozen.feature_extractor,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    was_training = model.training
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    records = iter_shard(shard_paths(data_dir)[0])
    half = frozen.unet.dtype != torch.float32  # trained weights stay fp32: autocast, as diffusers' examples do
    for index, record in zip(range(config.num_validation_images), records):
        with torch.autocast(frozen.unet.device.type, dtype=frozen.unet.dtype, enabled=half):
            image = _validation_image(pipe, model, frozen, record, condition, config)
        saved.append(out_dir / f"step-{step}-{index}.png")
        image.save(saved[-1])
    model.train(was_training)
    return saved


def _validation_image(pipe, model: MMFModel, frozen: FrozenModels, record, condition: str, config: MMFConfig):
    id_tokens = validation_id_tokens(model, frozen, record)
    control = validation_condition(record, condition).resize((config.resolution, config.resolution))
    return pipe(
        prompt=record.caption, image=control, id_embeds=id_tokens, width=config.resolution,
        height=config.resolution, num_inference_steps=config.validation_inference_steps,
        guidance_scale=config.validation_guidance_scale, generator=torch.Generator().manual_seed(config.seed),
    ).images[0]  # fmt: skip


def validation_condition(record, condition: str) -> Image.Image:
    """The record's condition image for a stage condition (`all`: skeleton and landmarks drawn together)."""
    if condition == "landmarks":
        return record.landmarks_image
    if condition == "skeleton":
        return record.skeleton
    return ImageChops.lighter(record.skeleton, record.landmarks_image)


def validation_id_tokens(model: MMFModel, frozen: FrozenModels, record) -> torch.Tensor:
    """`F_id (1, T, D)` of a record, exactly as `magicid.identity.IdentityEncoder` computes it at inference."""
    device, dtype = frozen.image_encoder.device, frozen.image_encoder.dtype
    pixels = frozen.feature_extractor(images=[record.face], return_tensors="pt").pixel_values.to(device, dtype)
    clip = frozen.image_encoder(pixels, output_hidden_states=True).hidden_states[-2]
    face = torch.from_numpy(record.embedding).to(device).unsqueeze(0)
    return model.resampler(face, clip.to(model.resampler.dtype))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="accelerate launch -m train.train_mmf", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", help="tiny, paper, or a JSON file of overrides")
    parser.add_argument("--data", required=True, type=Path, help="IDZoom folder from train.build_dataset")
    parser.add_argument("--out", required=True, type=Path, help="output folder (checkpoints, validation, final/)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N steps (default: all stages)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from exported weights (e.g. assets/mini) instead of the base UNet's copy")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = train(load_config(args.config), args.data, args.out, args.max_steps, args.resume, init=args.init)
    except MagicIDError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"global_step": result.global_step, "final": str(result.final_dir)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
