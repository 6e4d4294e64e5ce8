"""Seconds per image of MagicIDPipeline (DDIM, CFG, ControlNet with ID cross-attention); prints one JSON object.

    python benchmarks/bench_generate.py                       # tiny profile on CPU, 512x512, 30 steps
    python benchmarks/bench_generate.py --sd15                # SD1.5-size random-weight components (GPU: fp16)
    python benchmarks/bench_generate.py --sd15 --steps 1 --sizes 64x64   # smoke test of the SD1.5 code path on CPU
    python benchmarks/bench_generate.py --mini --sizes 128x128,256x128 --ids 1   # the shipped MagicID-mini

SD1.5-size components are built from configs with random weights (nothing is downloaded): timing does not
depend on the weights. `--ids N` adds N identities with face-region masks (MGMICA, Alg. 1).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from PIL import Image


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from magicid.mgmica import install_id_attention  # noqa: E402
from magicid.pipeline import MagicIDPipeline  # noqa: E402
from magicid.profiles import build_tiny_pipeline, wake_zero_convolutions  # noqa: E402
from magicid.tiny import sd15_scheduler_config, tiny_tokenizer  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd15", action="store_true", help="SD1.5-size components instead of the tiny profile")
    parser.add_argument("--mini", action="store_true", help="the shipped MagicID-mini (trained weights)")
    parser.add_argument("--sizes", default=None, help="WxH list, e.g. 512x512,768x1024 (default: tiny 512x512; sd15 both)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--ids", type=int, default=1, help="identities per image (>1: with masks)")
    parser.add_argument("--runs", type=int, default=2, help="timed runs per size (after one warm-up)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, help="default: float16 on cuda, float32 on cpu")
    return parser.parse_args(argv)


def build_sd15_pipeline(device: torch.device) -> MagicIDPipeline:
    """SD1.5's UNet / ControlNet / VAE / CLIP-L text encoder shapes, random weights, ID attention in the ControlNet."""
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device(device):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        controlnet = ControlNetModel.from_unet(unet)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
            sample_size=512,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                           vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu")  # fmt: skip
        )
    wake_zero_convolutions(controlnet)
    install_id_attention(controlnet, num_tokens=4)
    return MagicIDPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(), unet=unet, controlnet=controlnet,
        scheduler=DDIMScheduler(**sd15_scheduler_config()), id_mode="controlnet",
    )  # fmt: skip


def build_mini_pipeline() -> MagicIDPipeline:
    from magicid.config import ProfileConfig
    from magicid.perception import get_face_embedder
    from magicid.profiles import load_profile

    return load_profile(ProfileConfig(name="mini", device="cpu"), embedder=get_face_embedder("dlib"))[0]


def id_inputs(num_ids: int, dim: int, width: int, height: int, device, dtype):
    tokens = torch.randn(num_ids, 4, dim, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    if num_ids == 1:
        return tokens, None
    masks = torch.zeros(num_ids, height, width)
    for index in range(num_ids):
        masks[index, :, index * width // num_ids : (index + 1) * width // num_ids] = 1.0
    return tokens, masks


def time_size(pipe: MagicIDPipeline, width: int, height: int, args, device, dtype) -> dict:
    tokens, masks = id_inputs(args.ids, pipe.controlnet.config.cross_attention_dim, width, height, device, dtype)
    skeleton = Image.new("RGB", (width, height))

    def once(steps: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        pipe("a photo of a person", skeleton, id_embeds=tokens, id_masks=masks, num_inference_steps=steps,
             guidance_scale=args.guidance, width=width, height=height, generator=torch.Generator().manual_seed(0))  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once(min(2, args.steps))  # warm-up: kernels, allocator
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = [once(args.steps) for _ in range(args.runs)]
    result = {"width": width, "height": height, "steps": args.steps, "ids": args.ids,
              "seconds_per_image": round(min(seconds), 4), "runs": [round(s, 4) for s in seconds]}  # fmt: skip
    if device.type == "cuda":
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    sizes = args.sizes or ("512x512,768x1024" if args.sd15 else "128x128,256x128" if args.mini else "512x512")
    build_start = time.perf_counter()
    pipe = build_sd15_pipeline(device) if args.sd15 else build_mini_pipeline() if args.mini else build_tiny_pipeline()
    pipe.to(device=device, **({"dtype": dtype} if dtype != pipe.unet.dtype else {}))
    pipe.set_progress_bar_config(disable=True)
    report = {
        "benchmark": "generate",
        "components": "sd15-size random weights" if args.sd15 else "mini profile" if args.mini else "tiny profile",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "cfg": args.guidance > 1,
        "controlnet": True,
        "build_seconds": round(time.perf_counter() - build_start, 2),
        "results": [],
    }  # fmt: skip
    with torch.inference_mode():
        for size in sizes.split(","):
            width, height = (int(value) for value in size.lower().split("x"))
            report["results"].append(time_size(pipe, width, height, args, device, dtype))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
