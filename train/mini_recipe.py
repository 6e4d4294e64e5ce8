"""MagicID-mini in one command: data, base UNet, MMF, then the shipped weights. Every stage resumes.

    python -m train.mini_recipe --photos Celeb/ --identities identity_CelebA.txt --work DIR [--ship assets]
                                [--base-steps N] [--mmf-steps N] [--stages data,base,mmf,ship] [--ship-from W]

1. `data`: `train.mini_data` (128 px face crops, identity split, TAEF2 latents, IDZoom records).
2. `base`: `train.mini_base` (the latent UNet from scratch), into WORK/base; its EMA export is what MMF trains on.
3. `mmf`: `train.train_mmf --config mini` (the three stages, Clone Face Tuning and L_cfa, ID dropout) on WORK/base,
   into WORK/mmf.
4. `ship`: the base UNet and the MMF weights, in fp16, into `--ship`/mini-base/unet and `--ship`/mini (the `mini`
   profile's folders), with their SHA-256 in `--ship`/mini/checksums.json. `--ship-from` ships other MMF weights
   (a continued run's `final/` or a checkpoint's `magicid/`); without WORK/base the shipped base UNet stays.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path

from magicid.errors import MagicIDError


STAGES = ("data", "base", "mmf", "ship")


def ship(mmf_final: Path, base_unet: Path, assets: Path) -> dict[str, str]:
    """Copy the trained weights into the `mini` profile's layout at half size; returns {file: sha256}."""
    import torch
    from diffusers import ControlNetModel
    from safetensors.torch import load_file

    from magicid.mgmica import install_id_attention, load_id_attention_state_dict
    from magicid.profiles import save_magicid_weights
    from magicid.resampler import IDResampler

    shipped_base = assets / "mini-base" / "unet"
    if base_unet.resolve() != shipped_base.resolve():
        shutil.rmtree(shipped_base, ignore_errors=True)
        shutil.copytree(base_unet, shipped_base)
    resampler = IDResampler.from_pretrained(mmf_final / "resampler")
    controlnet = ControlNetModel.from_pretrained(mmf_final / "controlnet")
    install_id_attention(controlnet, num_tokens=resampler.num_tokens)
    load_id_attention_state_dict(controlnet, load_file(mmf_final / "id_attention.safetensors"))
    for folder, model in (("controlnet", controlnet), ("resampler", resampler)):
        model.register_to_config(_name_or_path=f"mini/{folder}")  # not the path of the machine that trained it
    metadata = json.loads((mmf_final / "magicid.json").read_text())
    destination = assets / "mini"
    card = (destination / "README.md").read_text() if (destination / "README.md").is_file() else None
    shutil.rmtree(destination, ignore_errors=True)
    save_magicid_weights(destination, controlnet.to(torch.float16), resampler.to(torch.float16), metadata)
    if card is not None:  # the model card is written by hand, with the measured numbers
        (destination / "README.md").write_text(card)
    sums = {path.relative_to(assets).as_posix(): _sha256(path)
            for path in sorted([*destination.rglob("*"), *shipped_base.rglob("*")])
            if path.is_file() and path.name not in ("README.md", "checksums.json")}  # fmt: skip
    (destination / "checksums.json").write_text(json.dumps(sums, indent=1))
    return sums


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(args: argparse.Namespace) -> dict:
    from train.configs import load_config

    stages = args.stages.split(",")
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise MagicIDError(f"unknown stages {unknown}: choose from {', '.join(STAGES)}")
    work, done = args.work, {}
    if "data" in stages:
        from train.mini_data import prepare

        done["data"] = prepare(args.photos, args.identities, work / "data")
    if "base" in stages:
        from train.mini_base import BaseConfig, train

        done["base"] = train(work / "data", work / "base", BaseConfig(steps=args.base_steps), resume=True)
    if "mmf" in stages:
        from train.train_mmf import train as train_mmf

        overrides = {"base_unet": str(work / "base" / "unet")}
        if args.mmf_steps is not None:
            overrides["stages"] = _scaled_stages(load_config("mini"), args.mmf_steps)
        result = train_mmf(load_config("mini", **overrides), work / "data" / "idzoom" / "train", work / "mmf",
                           resume=True)  # fmt: skip
        done["mmf"] = {"global_step": result.global_step, "final": str(result.final_dir)}
    if "ship" in stages:
        base_unet = work / "base" / "unet"
        base_unet = base_unet if base_unet.is_dir() else args.ship / "mini-base" / "unet"
        done["ship"] = ship(args.ship_from or work / "mmf" / "final", base_unet, args.ship)
    return done


def _scaled_stages(config, total: int) -> list:
    """The mini config's stages with the same proportions, `total` steps in all."""
    from train.configs import Stage

    scale = total / config.total_steps
    return [Stage(stage.name, stage.condition, max(1, round(stage.steps * scale))) for stage in config.stages]


def main(argv: list[str] | None = None) -> int:
    from train.mini_base import BaseConfig

    parser = argparse.ArgumentParser(prog="python -m train.mini_recipe", description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, help="CelebA photos (stage data)")
    parser.add_argument("--identities", type=Path, help="identity_CelebA.txt (stage data)")
    parser.add_argument("--work", required=True, type=Path, help="folder for data/, base/ and mmf/")
    parser.add_argument("--ship", type=Path, default=Path(__file__).resolve().parent.parent / "assets")
    parser.add_argument("--base-steps", type=int, default=BaseConfig.steps)
    parser.add_argument("--mmf-steps", type=int, default=None, help="default: the mini config's 1,600")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {', '.join(STAGES)}")
    parser.add_argument("--ship-from", type=Path, default=None, help="MMF weights to ship (default: WORK/mmf/final)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if "data" in args.stages and (args.photos is None or args.identities is None):
        parser.error("the data stage needs --photos and --identities")
    try:
        print(json.dumps(run(args), default=str))
    except MagicIDError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
