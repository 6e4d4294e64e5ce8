"""DIIR speed: seconds per face, one face and several faces batched. Prints one JSON object.

    python benchmarks/bench_diir.py                      # tiny profile (CPU), model resolution, 30 + 30 steps
    python benchmarks/bench_diir.py --sd15               # SD1.5-size UNet/ControlNet/VAE (random weights), 512 px
    python benchmarks/bench_diir.py --sd15 --steps 1 --resolution 128   # prove the SD1.5 code path on a CPU

Times cover Alg. 2 on the face crops (VAE encode, DDIM inversion with self-attention caching, denoising with
MGFF, landmark ControlNet and F_id, VAE decode); face detection, landmarks and masks are excluded (see
`--photo` for a whole `restore` on a real picture with the tiny profile).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from magicid import diir  # noqa: E402
from magicid.config import DIIRConfig  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sd15", action="store_true", help="SD1.5-size components instead of the tiny profile")
    parser.add_argument("--steps", type=int, default=30, help="inversion steps = denoising steps (paper: 30)")
    parser.add_argument("--resolution", type=int, default=512, help="face crop side fed to the model")
    parser.add_argument("--faces", default="1,4", help="batch sizes to time, comma-separated")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per batch size (the best is kept)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, help="default: float16 on cuda, float32 on cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy box)")
    parser.add_argument("--photo", help="also time a whole restore() of this picture (tiny profile only)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    started = time.perf_counter()
    pipe = build_sd15_pipeline() if args.sd15 else build_tiny()
    pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    report = {
        "benchmark": "diir",
        "components": "sd15-size (random weights)" if args.sd15 else "tiny profile",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "cpu_load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "resolution": args.resolution,
        "inversion_steps": args.steps,
        "denoising_steps": args.steps,
        "build_seconds": round(time.perf_counter() - started, 2),
        "runs": [],
    }
    config = DIIRConfig(steps=args.steps, resolution=args.resolution)
    dim = pipe.controlnet.config.cross_attention_dim
    diir_once(pipe, 1, config, dim)  # warm-up: kernels, allocator
    for faces in (int(count) for count in args.faces.split(",")):
        report["runs"].append(time_batch(pipe, faces, config, dim, args.repeats, device))
    if args.photo:
        report["photo"] = time_photo(pipe, args.photo, config)
    print(json.dumps(report, indent=2))


def build_tiny():
    from magicid.profiles import build_tiny_pipeline

    return build_tiny_pipeline()


def build_sd15_pipeline():
    """SD1.5's UNet, VAE and a ControlNet from the UNet, at full size from configs, random weights."""
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from magicid.mgmica import install_id_attention
    from magicid.pipeline import MagicIDPipeline
    from magicid.profiles import wake_zero_convolutions
    from magicid.tiny import sd15_scheduler_config, tiny_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, cross_attention_dim=768, attention_head_dim=8, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
    )  # fmt: skip
    controlnet = ControlNetModel.from_unet(unet)
    wake_zero_convolutions(controlnet)
    install_id_attention(controlnet, num_tokens=4)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=512,
    )  # fmt: skip
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
            vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=512, eos_token_id=513,
            pad_token_id=513,
        )
    ).eval()  # fmt: skip
    return MagicIDPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, controlnet=controlnet,
        scheduler=DDIMScheduler(**sd15_scheduler_config()), id_mode="controlnet",
    )  # fmt: skip


def synthetic_faces(count: int, resolution: int) -> tuple[list[Image.Image], list[Image.Image], np.ndarray]:
    """Noise crops, a drawn landmark-like condition and an elliptic face mask per face."""
    import cv2

    rng = np.random.default_rng(0)
    crops = [Image.fromarray(rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)) for _ in range(count)]
    canvas = np.zeros((resolution, resolution, 3), np.uint8)
    center, axes = (resolution // 2, resolution // 2), (resolution // 5, resolution // 4)
    cv2.ellipse(canvas, center, axes, 0, 0, 360, (10, 200, 10), 2)
    mask = np.zeros((resolution, resolution), np.float32)
    cv2.ellipse(mask, center, axes, 0, 0, 360, 1.0, -1)
    return crops, [Image.fromarray(canvas)] * count, np.stack([mask] * count)


def diir_once(pipe, faces: int, config: DIIRConfig, dim: int) -> None:
    crops, conditions, masks = synthetic_faces(faces, config.resolution)
    tokens = torch.randn(faces, 4, dim, generator=torch.Generator().manual_seed(0))
    diir.restore_crops(pipe, crops, conditions, masks, tokens, config)


def time_batch(pipe, faces: int, config: DIIRConfig, dim: int, repeats: int, device: torch.device) -> dict:
    best = float("inf")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        diir_once(pipe, faces, config, dim)
        _sync(device)
        best = min(best, time.perf_counter() - started)
    run = {"faces": faces, "seconds": round(best, 3), "seconds_per_face": round(best / faces, 3)}
    if device.type == "cuda":
        run["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return run


def time_photo(pipe, photo: str, config: DIIRConfig) -> dict:
    from magicid.identity import IdentityEncoder
    from magicid.perception import get_face_embedder
    from magicid.resampler import IDResampler

    embedder = get_face_embedder()
    resampler = IDResampler.tiny(id_embeddings_dim=embedder.dim).to(pipe.device, pipe.unet.dtype)
    encoder = IdentityEncoder(resampler, pipe.image_encoder, pipe.feature_extractor, embedder)
    reference = encoder.encode([photo_reference()], name="reference")
    started = time.perf_counter()
    result = diir.restore(pipe, encoder, photo, [reference], config)
    seconds = time.perf_counter() - started
    return {"photo": Path(photo).name, "faces": len(result.faces), "seconds": round(seconds, 2)}


def photo_reference() -> Path:
    return Path(__file__).resolve().parent.parent.parent / "shared" / "testdata" / "portraits" / "matt_damon" / "1.jpg"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
