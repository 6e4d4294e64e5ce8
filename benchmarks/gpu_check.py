"""The hub and magicid profiles on a GPU, the way a user's machine runs them; prints and writes one JSON object.

    python benchmarks/gpu_check.py --out $OUT                                   # on a GPU: SD1.5 size, float16
    python benchmarks/gpu_check.py --size tiny --device cpu --dtype bfloat16 --steps 2 --out /tmp/gpu-check
    python benchmarks/gpu_check.py --real --evaluate identities/ --out $OUT     # the real weights in the HF cache

It builds components with random weights (SD1.5 size: the UNet, ControlNets, VAE, CLIP-L text and CLIP ViT-H
image towers, a FaceID-PlusV2 file with its LoRA), writes them as the Hugging Face cache of every repo the hub
profile reads (real repo ids, `HF_HUB_OFFLINE=1`), and loads them with the product's own loader. Per profile it
times loading, a 512x512 portrait, DIIR on its face region, and a 3-person group at 768x512 (MGMICA), with the
peak accelerator memory of each. bfloat16 on a CPU takes the float16-on-CUDA code path, so the tiny run here
checks that every model and tensor follows the pipeline's device and dtype. The face embedder is a stand-in
(512-d, like buffalo_l's ArcFace): identity quality is not what this measures, only that the real-weights path runs.
With `--real` nothing is built: the profiles load the real weights (and ArcFace) from the machine's Hugging Face
cache. `--evaluate DIR` (one sub-folder of photos per person) also runs `python -m magicid evaluate`'s single suite
with each profile and puts its table rows into the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

# magicid, diffusers and huggingface_hub are imported after HF_HUB_CACHE is set (the Hub reads it at import)


class StandInEmbedder:
    """A 512-d face embedder that needs no weights (the ArcFace pack is a separate download)."""

    name = "stand-in"
    dim = 512

    def embed(self, image, face):
        return np.ones(self.dim, np.float32) / self.dim**0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json")
    parser.add_argument("--size", default="sd15", choices=("sd15", "tiny"))
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, help="default: float16 on cuda, bfloat16 on cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--profiles", default="hub,magicid")
    parser.add_argument("--real", action="store_true", help="use the real weights in the Hugging Face cache")
    parser.add_argument("--magicid-weights", default=None, help="with --real: the trained magicid profile's folder")
    parser.add_argument("--evaluate", type=Path, default=None, help="folder of identities for the evaluate suite")
    parser.add_argument("--judge", default="auto", help="evaluate's identity judge")
    parser.add_argument("--limit", type=int, default=2, help="evaluate: cases per suite")
    return parser.parse_args(argv)


def build_parts(size: str):
    """Random-weight components of `size` and a FaceID-Plus projection that fits them."""
    from diffusers.models.embeddings import IPAdapterFaceIDPlusImageProjection

    from magicid.tiny import build_tiny_components

    torch.manual_seed(0)
    parts = build_tiny_components()
    if size == "tiny":
        projection = IPAdapterFaceIDPlusImageProjection(embed_dims=64, output_dims=32, hidden_dims=32,
                                                        id_embeddings_dim=512, heads=1, dim_head=64, depth=4)  # fmt: skip
        return parts, projection
    return _sd15_parts(parts), IPAdapterFaceIDPlusImageProjection(
        embed_dims=768, output_dims=768, hidden_dims=1280, id_embeddings_dim=512, heads=12, dim_head=64, depth=4
    )  # the shapes of ip-adapter-faceid-plusv2_sd15.bin


def _sd15_parts(tiny):
    from bench_generate import build_sd15_pipeline
    from diffusers import ControlNetModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    pipe = build_sd15_pipeline(torch.device("cpu"))
    pipe.controlnet = ControlNetModel.from_unet(pipe.unet)  # the public OpenPose ControlNet has no ID attention
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32, patch_size=14,
        image_size=224, projection_dim=1024, hidden_act="gelu"))  # fmt: skip
    return dataclasses.replace(tiny, vae=pipe.vae, text_encoder=pipe.text_encoder, unet=pipe.unet,
                               controlnet=pipe.controlnet, image_encoder=image_encoder,
                               feature_extractor=CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224}))  # fmt: skip


def magicid_weights(folder: Path, parts, hub, size: str) -> Path:
    """A `magicid` profile folder (ControlNet with ID attention, resampler) on top of the hub repos."""
    import copy

    from magicid.mgmica import install_id_attention
    from magicid.profiles import save_magicid_weights, wake_zero_convolutions
    from magicid.resampler import IDResampler

    controlnet = copy.deepcopy(parts.controlnet)
    wake_zero_convolutions(controlnet)
    install_id_attention(controlnet)
    resampler = IDResampler() if size == "sd15" else IDResampler.tiny(id_embeddings_dim=512)
    save_magicid_weights(folder, controlnet, resampler, {"base_model": hub.base_model, "vae": hub.vae,
                                                         "image_encoder": hub.image_encoder,
                                                         "face_embedder": "arcface"})  # fmt: skip
    return folder


def check_profile(config, args, embedder) -> dict:
    from magicid import diir
    from magicid.config import DIIRConfig, GenerationConfig
    from magicid.engine import MagicID
    from magicid.layout import Layout

    report = {}
    steps = args.steps
    engine = MagicID(config, embedder=embedder)
    (pipe, encoder), report["load"] = _measured(engine._load)
    people = [_person(name) for name in ("A", "B", "C")]
    portrait = GenerationConfig(prompt="a photo of a person", width=512, height=512, steps=steps, seed=0,
                                restore_small_faces=False)  # fmt: skip
    layout = Layout.from_template("half-body", 1, 512, 512)
    result, report["portrait_512"] = _measured(lambda: engine.generate(portrait, people[:1], layout))
    image = result.images[0]
    face = _face_at(layout.identity_boxes(1)[0])  # random weights draw no detectable face: DIIR is told where it is
    diir_config = DIIRConfig(steps=steps)
    restored, report["diir_one_face"] = _measured(
        lambda: diir.restore(pipe, encoder, image, people[:1], diir_config, faces=[face], assignment=[0]))
    report["diir_one_face"]["faces_restored"] = len(restored.faces)
    group = dataclasses.replace(portrait, width=768, height=512)
    group_layout = Layout.from_template("standing", 3, 768, 512)
    _, report["group_3_768x512"] = _measured(lambda: engine.generate(group, people, group_layout))
    if args.evaluate:
        report["evaluate"] = _evaluate(engine, args, args.out / f"evaluate-{config.name}")
    report["dtype"] = str(pipe.unet.dtype)
    report["landmark_controlnet"] = pipe.landmark_controlnet is not None
    return report


def _evaluate(engine, args, out: Path) -> dict:
    from magicid.evaluation.judges import pick_judge
    from magicid.evaluation.runner import evaluate
    from magicid.evaluation.suites import build_suite

    suite = build_suite("single", args.evaluate, args.limit)
    judge = pick_judge(args.judge, engine.identity_encoder.embedder.name)
    results, timing = _measured(lambda: evaluate(engine, suite, judge, out, args.steps))
    return {"judge": results["judge"], "rows": results["rows"], **timing}


def _person(name: str):
    from magicid.identity import Identity

    rng = np.random.default_rng(ord(name))
    embedding = rng.standard_normal(512).astype(np.float32)
    return Identity(name, embedding / np.linalg.norm(embedding), [Image.new("RGB", (224, 224), "gray")],
                    Image.new("RGB", (128, 128)))  # fmt: skip


def _face_at(box):
    from magicid.perception.faces import Face

    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    kps5 = np.array([[x0 + 0.3 * w, y0 + 0.4 * h], [x0 + 0.7 * w, y0 + 0.4 * h], [x0 + 0.5 * w, y0 + 0.6 * h],
                     [x0 + 0.35 * w, y0 + 0.8 * h], [x0 + 0.65 * w, y0 + 0.8 * h]])  # fmt: skip
    return Face(box=np.array([x0, y0, x1, y1]), score=0.99, kps5=kps5)


def _measured(work):
    """(work(), {seconds, peak_memory_gb}) with the accelerator synchronised around it."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    value = work()
    if cuda:
        torch.cuda.synchronize()
    seconds = round(time.perf_counter() - started, 3)
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None
    return value, {"seconds": seconds, "peak_memory_gb": peak}


def _random_configs(args, device: str, dtype: str, report: dict) -> dict:
    """Random components of `args.size` written as the Hub cache (HF_HUB_CACHE must be set before the Hub is
    imported, so this runs first), and the hub and magicid profiles that read them."""
    cache = Path(tempfile.mkdtemp(prefix="magicid-hub-cache-"))
    os.environ.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    from hub_layout import write_hub_cache

    from magicid.config import ProfileConfig

    hub = ProfileConfig(name="hub", device=device, dtype=dtype)
    if args.size == "tiny":  # PlusV2's shortcut adds the 768-d CLIP tokens to the ID tokens: it needs SD1.5's widths
        hub = dataclasses.replace(hub, ip_adapter_weight="ip-adapter-faceid-plus_sd15.bin")
    parts, projection = build_parts(args.size)
    _, report["write_cache"] = _measured(lambda: write_hub_cache(cache, hub, parts, projection))
    weights = magicid_weights(cache / "magicid", parts, hub, args.size)
    return {"hub": hub, "magicid": dataclasses.replace(hub, name="magicid", magicid_weights=str(weights))}


def _real_configs(args, device: str, dtype: str) -> dict:
    from magicid.config import ProfileConfig

    return {"hub": ProfileConfig.from_env("hub", device=device, dtype=dtype),
            "magicid": ProfileConfig.from_env("magicid", device=device, dtype=dtype,
                                              **({"magicid_weights": args.magicid_weights} if args.magicid_weights else {}))}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("float16" if device == "cuda" else "bfloat16")
    report = {"size": "real" if args.real else args.size, "device": device, "dtype": dtype, "steps": args.steps,
              "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "torch": torch.__version__}  # fmt: skip
    configs = _real_configs(args, device, dtype) if args.real else _random_configs(args, device, dtype, report)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.profiles.split(","):
        try:
            report[name] = check_profile(configs[name], args, None if args.real else StandInEmbedder())
        except Exception as error:  # the report says which profile failed and how, and the others still run
            report[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0 if all("error" not in report[name] for name in args.profiles.split(",")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
