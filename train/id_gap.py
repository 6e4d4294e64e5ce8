"""Does the ID path carry identity? `L_cldm` with each photo's own `F_id`, another photo's of the same person,
another person's, and none.

    python -m train.id_gap --weights assets/mini [MORE ...] --data DIR [--config mini] [--batches 8]

DIR is an IDZoom folder with one sub-folder per person in the records' sources, best of held-out identities
(`train.mini_data` writes `idzoom/held_out`). Each batch holds two photos of each of `batch_size / 2` people, and is
scored at the same fixed noise and timesteps with each ID input (`train.train_mmf.id_losses`). `identity_gap` =
other person - same person: above 0 when the tokens carry who it is (what a user gives the model: other photos
of the person), not only what this photo looks like (`id_gap` = other person - own counts both). Several
`--weights` folders (checkpoints of one run) give a learning curve: one JSON line each, on the same batches.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import default_collate
from tqdm import tqdm

from magicid.errors import MagicIDError, TrainingDataError
from train.configs import MMFConfig, load_config
from train.dataset import person_of, training_example
from train.idzoom import IDZoomRecord, iter_records, shard_paths
from train.train_mmf import (
    FrozenModels,
    dataset_embedding_dim,
    id_losses,
    load_models,
    load_trained_weights,
    make_accelerator,
    move_frozen,
    weight_dtype_of,
)


def pair_batches(records: list[IDZoomRecord], batch_size: int, batches: int, seed: int) -> list[list[IDZoomRecord]]:
    """`batches` lists of two photos each of `batch_size // 2` different people (drawn with `seed`)."""
    photos = defaultdict(list)
    for record in records:
        photos[person_of(record.source)].append(record)
    people = sorted(person for person, theirs in photos.items() if len(theirs) >= 2)
    per_batch = batch_size // 2
    if per_batch < 1 or len(people) < max(per_batch, 2):
        raise TrainingDataError(f"needs {max(per_batch, 2)} people with 2 photos each, the data has {len(people)}")
    rng = random.Random(seed)
    return [[photo for person in rng.sample(people, per_batch) for photo in rng.sample(photos[person], 2)]
            for _ in range(batches)]  # fmt: skip


def measure(config: MMFConfig, weights: Path, data_dir: Path, batches: int, work_dir: Path) -> dict:
    """Mean and per-batch `id_losses` of `weights` over `pair_batches` of `data_dir`."""
    return next(measure_each(config, [weights], data_dir, batches, work_dir))


def measure_each(config: MMFConfig, weight_dirs: list[Path], data_dir: Path, batches: int,
                 work_dir: Path) -> Iterator[dict]:  # fmt: skip
    """`measure` for each weights folder in turn, on the same batches; the frozen models and batches are built once."""
    accelerator = make_accelerator(config, work_dir)
    frozen, model = load_models(config, dataset_embedding_dim(data_dir)[0])
    weight_dtype = weight_dtype_of(accelerator)
    model = model.to(accelerator.device).eval()
    move_frozen(frozen, accelerator.device, weight_dtype)
    records = list(iter_records(shard_paths(data_dir)))
    chosen_batches = [_collate(chosen, config, frozen) for chosen in
                      pair_batches(records, config.train_batch_size, batches, config.seed)]  # fmt: skip
    for weights in weight_dirs:
        load_trained_weights(model, weights)
        per_batch = []
        for batch in tqdm(chosen_batches, desc=f"id gap {Path(weights).name}", unit="batch"):
            with accelerator.autocast():
                per_batch.append(id_losses(model, frozen, batch, config, accelerator, weight_dtype))
        yield summarise(per_batch)


def _collate(chosen: list[IDZoomRecord], config: MMFConfig, frozen: FrozenModels) -> dict:
    examples = [training_example(record, config.resolution, frozen.tokenizer, frozen.feature_extractor, False)
                for record in chosen]  # fmt: skip
    return {**default_collate(examples), "person": [person_of(record.source) for record in chosen]}


def summarise(per_batch: list[dict[str, float]]) -> dict:
    """Means over batches, the share of batches where each gap is above 0, and the batches themselves."""
    if not per_batch:
        raise MagicIDError("no batch to measure: ask for at least one with --batches")
    means = {key: statistics.fmean(batch[key] for batch in per_batch) for key in per_batch[0]}
    shares = {f"{gap}_above_0": sum(batch[gap] > 0 for batch in per_batch) / len(per_batch)
              for gap in ("id_gap", "identity_gap")}  # fmt: skip
    return {**means, **shares, "batches": len(per_batch), "per_batch": per_batch}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.id_gap", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, type=Path, nargs="+",
                        help="exported MMF weights (e.g. assets/mini), or several for a learning curve")
    parser.add_argument("--data", required=True, type=Path, help="IDZoom folder, best of held-out identities")
    parser.add_argument("--config", default="mini", help="the training config the weights were trained with")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--work", type=Path, default=Path("runs/id-gap"), help="scratch folder for accelerate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    overrides = {"train_batch_size": args.batch_size} if args.batch_size else {}
    try:
        config = load_config(args.config, **overrides)
        results = measure_each(config, args.weights, args.data, args.batches, args.work)
        for weights, result in zip(args.weights, results):
            means = {key: value for key, value in result.items() if key != "per_batch"}
            print(json.dumps({"weights": str(weights), **means}), flush=True)
    except MagicIDError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
