"""MagicID-mini's recipe at toy size: face crops with an identity split and cached TAEF2 latents, then a few base
UNet steps that checkpoint, sample, export and resume. (The real run is `python -m train.mini_data` and
`python -m train.mini_base` on CelebA; see train/README.md.)"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from diffusers import UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file

from train.mini_data import LATENTS_NAME, prepare


PEOPLE = ["barack_obama", "joe_biden", "angelina_jolie", "jennifer_aniston", "elon_musk", "matt_damon",
          "marissa_mayer", "mark_zuckerberg", "sundar_pichai", "yang_mi"]  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """The base recipe trains under bf16; accelerate keeps one mixed-precision setting per process, so it is reset
    for the tests that follow (as accelerate's own tests do)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, testdata):
    """Two photos of each of ten people, named and labelled as CelebA's are; the 10th identity is held out."""
    photos = tmp_path_factory.mktemp("celeba")
    lines = []
    for identity, person in enumerate(PEOPLE, start=1):
        for number in (1, 2):
            name = f"{identity:03d}{number:03d}.jpg"
            shutil.copy(testdata / "portraits" / person / f"{number}.jpg", photos / name)
            lines.append(f"{name} {identity}")
    (photos / "blank.jpg").write_bytes(b"")  # not in the identity file: ignored
    identities = photos / "identity_CelebA.txt"
    identities.write_text("\n".join(lines) + "\n")
    out = tmp_path_factory.mktemp("mini")
    return prepare(photos, identities, out), photos, identities, out


def test_crops_index_and_identity_split(prepared):
    summary, _, _, out = prepared
    entries = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert summary["crops"] == len(entries) >= 18 and summary["identities"] == 10
    assert {entry["identity"] for entry in entries if entry["split"] == "held_out"} == {10}
    for entry in entries:
        crop = Image.open(out / entry["file"])
        x0, y0, x1, y1 = entry["face_box"]
        assert crop.size == (128, 128) and 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
        assert max(x1 - x0, y1 - y0) / 128 == pytest.approx(1 / 1.8, abs=0.02)  # the face is 1 / 1.8 of the crop
    tensors = load_file(out / LATENTS_NAME)
    train = sum(entry["split"] == "train" for entry in entries)
    assert tensors["latents"].shape == tensors["flipped"].shape == (train, 32, 16, 16)
    assert not torch.equal(tensors["latents"], tensors["flipped"])


def test_preparation_resumes_without_redoing_photos(prepared):
    summary, photos, identities, out = prepared
    again = prepare(photos, identities, out)
    assert again == summary
    assert len((out / "index.jsonl").read_text().splitlines()) == summary["crops"]


def test_base_unet_trains_exports_samples_and_resumes(prepared, tmp_path):
    from train.mini_base import BaseConfig, train

    _, _, _, data = prepared
    config = BaseConfig(steps=2, batch_size=2, sample_every=2, sample_steps=2, warmup_steps=1)
    assert train(data, tmp_path, config)["steps"] == 2
    assert UNet2DConditionModel.from_pretrained(tmp_path / "unet").config.in_channels == 32
    weights = load_file(tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float16}  # shipped at half size
    assert Image.open(tmp_path / "samples" / "step-2.png").size == (8 * 128, 128)
    assert json.loads((tmp_path / "unet" / "training.json").read_text())["step"] == 2
    resumed = train(data, tmp_path, BaseConfig(steps=3, batch_size=2, sample_every=3, sample_steps=2, warmup_steps=1),
                    resume=True)  # fmt: skip
    assert resumed["steps"] == 3
    losses = [json.loads(line)["step"] for line in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert losses == [1, 2, 3]  # the resumed run went on from step 2
    from train.mini_base import evaluate

    scored = evaluate(tmp_path / "unet", count=2, config=config)
    assert scored["samples"] == 2 and 0 <= scored["mtcnn_p99"] <= scored["mtcnn_p90"] <= 1
    assert (tmp_path / "evaluation.png").is_file()


def test_records_for_mmf_reuse_each_crops_face(prepared):
    from train.idzoom import read_dataset

    summary, _, _, out = prepared
    records = read_dataset(out / "idzoom" / "train")
    assert summary["records"]["train"]["kept"] == len(records) > 0
    assert summary["records"]["held_out"]["kept"] + summary["records"]["held_out"]["dropped"] == 2
    for record in records:
        assert record.image.size == (128, 128) and record.embedder == "dlib" and record.embedding.shape == (128,)


def test_mmf_stage_trains_on_the_base_and_loads_as_the_mini_profile(prepared, tmp_path, testdata):
    from magicid.config import GenerationConfig, ProfileConfig
    from magicid.engine import MagicID
    from magicid.mini import BASE_UNET_DIR
    from train.configs import Stage, load_config
    from train.mini_recipe import main as recipe_main
    from train.train_mmf import train as train_mmf

    _, _, _, data = prepared
    stages = [Stage("landmark-only", "landmarks", 1), Stage("skeleton", "skeleton", 1), Stage("all", "all", 1)]
    config = load_config("mini", train_batch_size=2, stages=stages, checkpointing_steps=3, validation_steps=3,
                         num_validation_images=1, validation_inference_steps=2, dataloader_num_workers=0,
                         shuffle_buffer=4, mixed_precision="no")  # fmt: skip
    result = train_mmf(config, data / "idzoom" / "train", tmp_path / "run")
    metadata = json.loads((result.final_dir / "magicid.json").read_text())
    assert metadata["base_model"] == "mini" and metadata["face_embedder"] == "dlib"
    assets = tmp_path / "assets"
    shutil.copytree(BASE_UNET_DIR, assets / "mini-base" / "unet")
    argv = ["--work", str(tmp_path / "no-base"), "--stages", "ship", "--ship-from", str(result.final_dir),
            "--ship", str(assets)]  # fmt: skip
    assert recipe_main(argv) == 0  # without WORK/base, the base UNet already in --ship stays
    sums = json.loads((assets / "mini" / "checksums.json").read_text())
    assert sums["mini-base/unet/diffusion_pytorch_model.safetensors"] == hashlib.sha256(
        (BASE_UNET_DIR / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()
    shipped = tmp_path / "assets" / "mini"
    assert json.loads((shipped / "checksums.json").read_text()) == sums and "mini/magicid.json" in sums
    controlnet = load_file(shipped / "controlnet" / "diffusion_pytorch_model.safetensors")
    assert {tensor.dtype for tensor in controlnet.values()} == {torch.float16}
    assert str(tmp_path) not in "".join(path.read_text() for path in shipped.rglob("*.json"))  # no build paths
    engine = MagicID.from_profile(ProfileConfig(name="mini", magicid_weights=str(shipped)))
    assert engine.pipeline.native_side == 128 and "MagicID-mini" in engine.banner()
    identity = engine.encode_identity([testdata / "portraits" / "barack_obama" / "1.jpg"])
    generated = engine.generate(GenerationConfig(prompt="a photo of a person", steps=2), [identity])
    assert generated.images[0].size == (128, 128)  # the 512 px request at the model's own scale, and it says so
    assert any("works at 128 px" in message for message in generated.messages)
