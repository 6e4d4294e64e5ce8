"""Does the ID path carry identity? `L_cldm` with each photo's own `F_id`, with another photo's, and with none.

    python -m train.id_gap --weights assets/mini --data DIR [--config mini] [--batches 8]

DIR is an IDZoom folder, best of held-out identities (`train.mini_data` writes `idzoom/held_out`). Every batch is
scored at the same fixed noise and timesteps three times (`train.train_mmf.id_losses`); `id_gap` = shuffled - own.
A model whose ID path has learned identity denoises a photo better with its own person's tokens (gap > 0 on most
batches); a gap of 0 means the tokens are ignored, a negative one that any tokens help as much as the right ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from magicid.errors import MagicIDError
from train.configs import MMFConfig, load_config
from train.dataset import MMFDataset
from train.train_mmf import (
    dataset_embedding_dim,
    id_losses,
    load_models,
    load_trained_weights,
    make_accelerator,
    weight_dtype_of,
)


def measure(config: MMFConfig, weights: Path, data_dir: Path, batches: int, work_dir: Path) -> dict:
    """Mean and per-batch `id_losses` of the first `batches` batches of `data_dir`, in record order."""
    accelerator = make_accelerator(config, work_dir)
    frozen, model = load_models(config, dataset_embedding_dim(data_dir)[0])
    load_trained_weights(model, weights)
    weight_dtype = weight_dtype_of(accelerator)
    model = model.to(accelerator.device).eval()
    for part in (frozen.vae, frozen.unet, frozen.text_encoder, frozen.image_encoder):
        part.to(accelerator.device, weight_dtype)
    dataset = MMFDataset(data_dir, config.resolution, frozen.tokenizer, frozen.feature_extractor, null_text_prob=0.0,
                         seed=config.seed, shuffle_buffer=1)  # fmt: skip
    per_batch = []
    loader = DataLoader(dataset, batch_size=config.train_batch_size, num_workers=0, drop_last=True)
    for batch, _ in tqdm(zip(loader, range(batches)), total=batches, desc="id gap", unit="batch"):
        with accelerator.autocast():
            per_batch.append(id_losses(model, frozen, batch, config, accelerator, weight_dtype))
    return summarise(per_batch)


def summarise(per_batch: list[dict[str, float]]) -> dict:
    """Means over batches, the share of batches where own beats shuffled, and the batches themselves."""
    if not per_batch:
        raise MagicIDError("no full batch in the data: use a smaller --batch-size or more records")
    means = {key: statistics.fmean(batch[key] for batch in per_batch) for key in per_batch[0]}
    return {**means, "own_beats_shuffled": sum(batch["id_gap"] > 0 for batch in per_batch) / len(per_batch),
            "batches": len(per_batch), "per_batch": per_batch}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.id_gap", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, type=Path, help="exported MMF weights (e.g. assets/mini)")
    parser.add_argument("--data", required=True, type=Path, help="IDZoom folder, best of held-out identities")
    parser.add_argument("--config", default="mini", help="the training config the weights were trained with")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--work", type=Path, default=Path("runs/id-gap"), help="scratch folder for accelerate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    overrides = {"train_batch_size": args.batch_size} if args.batch_size else {}
    try:
        result = measure(load_config(args.config, **overrides), args.weights, args.data, args.batches, args.work)
    except MagicIDError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({key: value for key, value in result.items() if key != "per_batch"}))
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
