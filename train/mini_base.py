"""MagicID-mini, stage 1: the base latent UNet, trained from scratch on 128 px face crops (TAEF2 latents).

    python -m train.mini_base --data data/mini --out runs/mini-base [--max-steps N] [--resume]

Data: `latents-128.safetensors` from `python -m train.mini_data` (training identities only; mirrored copies are drawn
half of the time). Loss: v-prediction MSE under a cosine schedule (`magicid.mini.mini_schedule`, which DDIM sampling,
DDIM inversion in DIIR and the MMF stage read from the scheduler config). AdamW, an EMA of the weights (what is exported and sampled), 10% null
caption. Every `--sample-every` steps: a checkpoint (`accelerator.save_state`, resumable with `--resume`), a grid of
8 fixed-seed samples from the EMA weights (`samples/step-N.png`) and the losses so far (`losses.jsonl`). At the end,
`unet/` holds the EMA weights (fp16 safetensors, diffusers layout).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from magicid.errors import MagicIDError, TrainingDataError
from magicid.mini import CAPTION, caption_embeddings, mini_scheduler, mini_text_parts, mini_unet
from train.mini_data import LATENTS_NAME


logger = logging.getLogger(__name__)


@dataclass
class BaseConfig:
    steps: int = 4000
    batch_size: int = 32
    learning_rate: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    ema_decay: float = 0.999
    null_caption_prob: float = 0.1
    sample_every: int = 500
    sample_steps: int = 30
    sample_guidance: float = 5.0
    seed: int = 0


def load_latents(data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    path = data_dir / LATENTS_NAME
    if not path.exists():
        raise TrainingDataError(f"no {LATENTS_NAME} in {data_dir}: run python -m train.mini_data first")
    tensors = load_file(path)
    return tensors["latents"].float(), tensors["flipped"].float()


def draw_batch(latents, flipped, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    index = torch.randint(0, latents.shape[0], (batch_size,), generator=generator)
    mirror = torch.rand(batch_size, generator=generator) < 0.5
    return torch.where(mirror.view(-1, 1, 1, 1), flipped[index], latents[index])


def loss_of(unet, scheduler, clean, text, null_text, config: BaseConfig, generator) -> torch.Tensor:
    noise = torch.randn(clean.shape, generator=generator)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],), generator=generator)
    dropped = torch.rand(clean.shape[0], generator=generator) < config.null_caption_prob
    context = torch.where(dropped.view(-1, 1, 1), null_text, text).expand(clean.shape[0], -1, -1)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    prediction = unet(noisy, timesteps, encoder_hidden_states=context, return_dict=False)[0]
    return F.mse_loss(prediction.float(), scheduler.get_velocity(clean, noise, timesteps))


@torch.no_grad()
def sample_grid(unet, text, null_text, config: BaseConfig, count: int = 8) -> Image.Image:
    """`count` fixed-seed samples, DDIM with CFG, decoded by TAEF2, side by side."""
    from magicid.taef2 import SHIPPED, load_taef2

    scheduler = mini_scheduler()
    scheduler.set_timesteps(config.sample_steps)
    generator = torch.Generator().manual_seed(1234)
    latents = torch.randn(count, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size,
                          generator=generator)  # fmt: skip
    context = torch.cat([null_text.expand(count, -1, -1), text.expand(count, -1, -1)])
    for timestep in scheduler.timesteps:
        uncond, cond = unet(torch.cat([latents, latents]), timestep, encoder_hidden_states=context).sample.chunk(2)
        latents = scheduler.step(uncond + config.sample_guidance * (cond - uncond), timestep, latents).prev_sample
    images = load_taef2(SHIPPED).decode(latents).sample.clamp(-1, 1)
    pixels = ((images + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    grid = Image.new("RGB", (pixels.shape[2] * count, pixels.shape[1]))
    for index, image in enumerate(pixels):
        grid.paste(Image.fromarray(image), (index * pixels.shape[2], 0))
    return grid


def train(data_dir: Path, out_dir: Path, config: BaseConfig, resume: bool = False) -> dict:
    accelerator = Accelerator(mixed_precision="bf16", project_config=ProjectConfiguration(project_dir=str(out_dir)))
    set_seed(config.seed)
    latents, flipped = load_latents(data_dir)
    tokenizer, text_encoder = mini_text_parts()
    text, null_text = caption_embeddings(tokenizer, text_encoder, [CAPTION, ""]).chunk(2)
    unet = mini_unet()
    ema = EMAModel(unet.parameters(), decay=config.ema_decay, model_cls=type(unet), model_config=unet.config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / config.warmup_steps))
    unet, optimizer, schedule = accelerator.prepare(unet, optimizer, schedule)
    noise_scheduler = DDPMScheduler(**_training_schedule())
    step = _resume(accelerator, ema, out_dir) if resume else 0
    generator = torch.Generator().manual_seed(config.seed + step)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=1))
    with tqdm(total=config.steps, initial=step, desc="mini base", unit="step") as progress, \
            (out_dir / "losses.jsonl").open("a") as log:  # fmt: skip
        while step < config.steps:
            with accelerator.autocast():
                loss = loss_of(unet, noise_scheduler, draw_batch(latents, flipped, config.batch_size, generator),
                               text, null_text, config, generator)  # fmt: skip
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(unet.parameters())
            step += 1
            log.write(json.dumps({"step": step, "loss": round(loss.item(), 5)}) + "\n")
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.4f}")
            if step % config.sample_every == 0 or step == config.steps:
                _checkpoint(accelerator, unet, ema, out_dir, step, text, null_text, config)
    return {"steps": step, "unet": str(out_dir / "unet")}


def evaluate(unet_dir: Path, count: int = 64, config: BaseConfig | None = None) -> dict:
    """Share of `count` fixed-seed samples in which MTCNN finds a face with p >= 0.9 / 0.99 (the base stage's
    first bar: faces at all, before any identity); saves the samples as `evaluation.png` next to `unet_dir`."""
    from diffusers import UNet2DConditionModel

    from magicid.perception import detect_faces

    config = config or BaseConfig()
    unet = UNet2DConditionModel.from_pretrained(unet_dir, torch_dtype=torch.float32).eval()
    tokenizer, text_encoder = mini_text_parts()
    text, null_text = caption_embeddings(tokenizer, text_encoder, [CAPTION, ""]).chunk(2)
    grid = sample_grid(unet, text, null_text, config, count)
    side = grid.height
    scores = []
    for index in range(count):
        faces = detect_faces(grid.crop((index * side, 0, (index + 1) * side, side)))
        scores.append(max((float(face.score) for face in faces), default=0.0))
    grid.save(Path(unet_dir).parent / "evaluation.png")
    return {"samples": count, "mtcnn_p90": sum(s >= 0.9 for s in scores) / count,
            "mtcnn_p99": sum(s >= 0.99 for s in scores) / count}  # fmt: skip


def _training_schedule() -> dict:
    from magicid.mini import mini_schedule

    return {key: value for key, value in mini_schedule().items() if key != "set_alpha_to_one"}


def _checkpoint(accelerator, unet, ema, out_dir: Path, step: int, text, null_text, config: BaseConfig) -> None:
    folder = out_dir / "checkpoints" / f"checkpoint-{step}"
    accelerator.save_state(str(folder), safe_serialization=True)
    save_file({f"shadow.{i}": p.detach().contiguous() for i, p in enumerate(ema.shadow_params)}, folder / "ema.safetensors")
    (folder / "step.json").write_text(json.dumps({"step": step, "ema_optimization_step": ema.optimization_step}))
    exported = mini_unet()
    exported.load_state_dict(accelerator.unwrap_model(unet).state_dict())
    ema.copy_to(exported.parameters())
    exported.eval()
    (out_dir / "samples").mkdir(exist_ok=True)
    sample_grid(exported, text, null_text, config).save(out_dir / "samples" / f"step-{step}.png")
    exported.half().save_pretrained(out_dir / "unet", safe_serialization=True)
    (out_dir / "unet" / "training.json").write_text(json.dumps({"stage": "mini-base", "step": step, **asdict(config)}))


def _resume(accelerator, ema, out_dir: Path) -> int:
    checkpoints = sorted((out_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    if not checkpoints:
        logger.warning("--resume: no checkpoint in %s, starting from step 0", out_dir)
        return 0
    accelerator.load_state(str(checkpoints[-1]))
    shadow = load_file(checkpoints[-1] / "ema.safetensors")
    for index, parameter in enumerate(ema.shadow_params):
        parameter.data.copy_(shadow[f"shadow.{index}"])
    saved = json.loads((checkpoints[-1] / "step.json").read_text())
    ema.optimization_step = saved["ema_optimization_step"]
    return saved["step"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.mini_base", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="folder written by python -m train.mini_data")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--max-steps", type=int, default=BaseConfig.steps)
    parser.add_argument("--batch-size", type=int, default=BaseConfig.batch_size)
    parser.add_argument("--sample-every", type=int, default=BaseConfig.sample_every, help="steps between checkpoints + samples")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--evaluate", type=int, metavar="N", help="only sample N images from OUT/unet and score them")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = BaseConfig(steps=args.max_steps, batch_size=args.batch_size, sample_every=args.sample_every)
    try:
        if args.evaluate:
            print(json.dumps(evaluate(args.out / "unet", args.evaluate, config)))
            return 0
        print(json.dumps(train(args.data, args.out, config, args.resume)))
    except MagicIDError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
