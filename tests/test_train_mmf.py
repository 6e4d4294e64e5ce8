"""MMF training on the tiny models: loss goes down, checkpoints load with the `magicid` profile, resume, 2 processes.

The records are synthetic annotations on a real photo (no face models needed here; the data engine has its own
tests), written with the real shard writer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from magicid.perception.openpose import draw_openpose
from train.configs import Stage, load_config
from train.idzoom import IDZoomRecord, ShardWriter


REPO_ROOT = Path(__file__).resolve().parent.parent
RESOLUTION = 64  # the tiny ControlNet's cross-attention grid at 64 px is 4x4
EMBED_DIM = 128


def synthetic_record(photo: Path, index: int, person: str | None = None) -> IDZoomRecord:
    image = Image.open(photo).convert("RGB").resize((192, 160))
    width, height = image.size
    box = np.array([70.0, 20.0, 120.0, 75.0]) + index * 4
    keypoints = np.zeros((18, 3), dtype=np.float32)
    joints = {0: (95, 55), 1: (95, 90), 2: (70, 92), 5: (120, 92), 14: (88, 45), 15: (102, 45)}
    for joint, (x, y) in joints.items():
        keypoints[joint] = (x / width, y / height, 1.0)
    mask = np.zeros((height, width), dtype=np.float32)
    mask[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])] = 1.0
    landmarks_image = Image.new("RGB", image.size)
    ImageDraw.Draw(landmarks_image).ellipse(tuple(box), outline=(10, 200, 10), width=2)
    embedding = np.random.default_rng(index).normal(size=EMBED_DIM).astype(np.float32)
    return IDZoomRecord(
        key=f"synthetic{index}", source=f"{person or photo.parent.name}/{index}.jpg", caption="a photo of a person",
        image=image, skeleton=draw_openpose([keypoints], width, height), keypoints=keypoints,
        face=image.crop(tuple(box.astype(int))).resize((224, 224)), landmarks_image=landmarks_image,
        landmarks=np.zeros((68, 2), np.float32), mask=mask, face_box=box, face_kps5=np.zeros((5, 2)),
        embedding=embedding / np.linalg.norm(embedding), embedder="dlib",
    )  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, testdata) -> Path:
    directory = tmp_path_factory.mktemp("idzoom")
    photos = [testdata / "portraits" / "barack_obama" / "1.jpg", testdata / "portraits" / "joe_biden" / "1.jpg"]
    with ShardWriter(directory, records_per_shard=10) as writer:
        for index, photo in enumerate(photos):
            writer.write(synthetic_record(photo, index))
    return directory


def tiny_test_config(**overrides):
    stages = [Stage("landmark-only", "landmarks", 4), Stage("skeleton", "skeleton", 4), Stage("all", "all", 22)]
    settings = {
        "resolution": RESOLUTION, "learning_rate": 1e-3, "cfa_min_resolution": 4, "checkpointing_steps": 100,
        "validation_steps": 100, "validation_inference_steps": 2, "stages": stages,
    }  # fmt: skip
    return load_config("tiny", **{**settings, **overrides})


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    from train.train_mmf import train

    out_dir = tmp_path_factory.mktemp("mmf")
    return train(tiny_test_config(), data_dir, out_dir, max_steps=20), out_dir


def test_tiny_run_lowers_the_fixed_batch_loss_against_the_untrained_control(trained):
    """The loss at fixed noise and timesteps on a fixed batch, after 20 steps, against step 0: the weights an lr=0
    run would still have (the training loss itself is too noisy to tell, its timesteps are random)."""
    result, out_dir = trained
    assert result.global_step == 20
    assert sorted(result.eval_losses) == [0, 20]
    assert result.eval_losses[20] < 0.97 * result.eval_losses[0]
    clone_steps = [entry["step"] for entry in result.losses if "l_cfa" in entry]
    assert clone_steps == [10]  # Eq. 4: L_cfa every 10 iterations, in the final stage only (it starts at step 8)
    assert [entry["stage"] for entry in result.losses[3:5]] == ["landmark-only", "skeleton"]
    logged = [json.loads(line) for line in (out_dir / "logs" / "losses.jsonl").read_text().splitlines()]
    assert len(logged) == 20
    evaluated = [json.loads(line) for line in (out_dir / "logs" / "eval.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in evaluated] == [0, 20]
    final = evaluated[-1]  # the same batch with the other person's F_id, and with none, scores differently
    assert final["l_cldm_other_person_id"] != final["l_cldm_fixed_batch"] != final["l_cldm_off_id"]
    assert final["id_gap"] == pytest.approx(final["l_cldm_other_person_id"] - final["l_cldm_fixed_batch"], abs=1e-6)
    assert final["l_cldm_same_person_id"] is None and final["identity_gap"] is None  # one photo per person here


def test_checkpoint_holds_state_and_magicid_weights(trained):
    _, out_dir = trained
    checkpoint = out_dir / "checkpoints" / "checkpoint-20"
    assert (checkpoint / "model.safetensors").is_file()
    for name in ("controlnet", "resampler", "id_attention.safetensors", "magicid.json"):
        assert (checkpoint / "magicid" / name).exists() and (out_dir / "final" / name).exists()
    metadata = json.loads((out_dir / "final" / "magicid.json").read_text())
    assert metadata["base_model"] == "tiny" and metadata["global_step"] == 20
    assert Image.open(out_dir / "validation" / "step-20-0.png").size == (RESOLUTION, RESOLUTION)


def test_final_weights_load_with_magicid_profile_and_generate(trained, data_dir):
    from safetensors.torch import load_file

    from magicid.config import ProfileConfig
    from magicid.perception import DlibEmbedder
    from magicid.profiles import load_profile
    from train.idzoom import read_dataset

    _, out_dir = trained
    pipe, encoder = load_profile(ProfileConfig(name="magicid", magicid_weights=str(out_dir / "final")), DlibEmbedder())
    record = read_dataset(data_dir)[0]
    clip = encoder.clip_features([record.face])
    tokens = encoder.resampler(torch.from_numpy(record.embedding)[None], clip)
    output = pipe(
        prompt=record.caption, image=record.skeleton.resize((RESOLUTION, RESOLUTION)), id_embeds=tokens,
        width=RESOLUTION, height=RESOLUTION, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert output.images[0].size == (RESOLUTION, RESOLUTION)
    state = load_file(out_dir / "checkpoints" / "checkpoint-20" / "model.safetensors")
    key = next(k for k in state if k.startswith("controlnet.controlnet_mid_block"))
    loaded = dict(pipe.controlnet.named_parameters())[key.removeprefix("controlnet.")]
    assert torch.equal(loaded.detach().cpu(), state[key])  # the profile loads the trained, not the initial, weights
    assert state[key].abs().sum() > 0  # the zero convolution has learned something


def test_init_starts_from_exported_weights(trained, data_dir, tmp_path):
    """`--init`: a run started from the exported step-20 weights scores at its step 0 what the trained run did at 20."""
    from train.train_mmf import train

    result, out_dir = trained
    started = train(tiny_test_config(), data_dir, tmp_path / "continued", max_steps=0, init=out_dir / "final")
    assert started.eval_losses[0] == pytest.approx(result.eval_losses[20], rel=1e-5)
    assert started.eval_losses[0] != pytest.approx(result.eval_losses[0], rel=1e-3)
    metadata = json.loads((started.final_dir / "magicid.json").read_text())
    assert (metadata["global_step"], metadata["run_step"]) == (result.global_step, 0)  # counts the steps before init


def test_init_refuses_an_incomplete_weights_folder_in_one_line(trained, data_dir, tmp_path):
    import shutil

    from magicid.errors import TrainingDataError
    from train.train_mmf import train

    _, out_dir = trained
    broken = tmp_path / "broken"
    shutil.copytree(out_dir / "final", broken)
    (broken / "id_attention.safetensors").unlink()
    with pytest.raises(TrainingDataError, match="cannot start from broken") as error:
        train(tiny_test_config(), data_dir, tmp_path / "other", max_steps=0, init=broken)
    assert "\n" not in str(error.value) and str(tmp_path) not in str(error.value)


@pytest.fixture(scope="module")
def people_data_dir(tmp_path_factory, testdata) -> Path:
    """Two photos each of three people (records in sub-folders named after them)."""
    directory = tmp_path_factory.mktemp("idzoom-people")
    with ShardWriter(directory, records_per_shard=10) as writer:
        for index, person in enumerate(["barack_obama", "joe_biden", "elon_musk"] * 2):
            photo = testdata / "portraits" / person / f"{1 + index // 3}.jpg"
            writer.write(synthetic_record(photo, index, person))
    return directory


def test_id_partners_pick_the_next_photo_of_the_same_or_another_person():
    from train.train_mmf import id_partners

    people = ["ann", "bob", "ann", "cy"]
    assert id_partners(people, same_person=True).tolist() == [2, -1, 0, -1]
    assert id_partners(people, same_person=False).tolist() == [1, 2, 3, 0]


def test_id_gap_scores_own_same_person_other_person_and_no_identity(trained, people_data_dir, tmp_path):
    from train.id_gap import measure

    _, out_dir = trained
    config = tiny_test_config(train_batch_size=4)
    result = measure(config, out_dir / "final", people_data_dir, batches=2, work_dir=tmp_path)
    assert result["batches"] == len(result["per_batch"]) == 2
    first = result["per_batch"][0]
    assert len({first[f"l_cldm_{kind}_id"] for kind in ("own", "same_person", "other_person", "off")}) == 4
    assert first["identity_gap"] == pytest.approx(first["l_cldm_other_person_id"] - first["l_cldm_same_person_id"], abs=1e-6)
    assert result["id_gap"] == pytest.approx(result["l_cldm_other_person_id"] - result["l_cldm_own_id"], abs=1e-6)
    assert result["identity_gap_above_0"] in (0.0, 0.5, 1.0)


def test_id_gap_cli_prints_one_line_per_weights_folder_on_the_same_batches(trained, people_data_dir, tmp_path, capsys):
    from train.id_gap import main

    _, out_dir = trained
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({"base_config": "tiny", **tiny_test_config(train_batch_size=4).to_dict()}))
    final, again = str(out_dir / "final"), str(out_dir / "final")
    argv = ["--weights", final, again, "--data", str(people_data_dir), "--config", str(config_path), "--batches", "1",
            "--work", str(tmp_path / "work")]  # fmt: skip
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["weights"] for line in lines] == [final, again]
    assert lines[0]["id_gap"] == pytest.approx(lines[1]["id_gap"], abs=1e-6)
    assert main(["--weights", str(tmp_path), "--data", str(people_data_dir), "--config", str(config_path)]) == 2
    assert "cannot start from" in capsys.readouterr().err


def test_pair_batches_hold_two_photos_of_different_people(people_data_dir):
    from magicid.errors import TrainingDataError
    from train.dataset import person_of
    from train.id_gap import pair_batches
    from train.idzoom import iter_records, shard_paths

    records = list(iter_records(shard_paths(people_data_dir)))
    for batch in pair_batches(records, batch_size=4, batches=3, seed=0):
        people = [person_of(record.source) for record in batch]
        assert people[0] == people[1] != people[2] == people[3]
        assert len({record.key for record in batch}) == 4
    with pytest.raises(TrainingDataError, match="needs 4 people with 2 photos each, the data has 3"):
        pair_batches(records, batch_size=8, batches=1, seed=0)


def test_id_gap_summary_counts_batches_where_each_gap_is_above_0():
    from train.id_gap import summarise

    batches = [{"l_cldm_own_id": 0.5, "id_gap": 0.1, "identity_gap": -0.2},
               {"l_cldm_own_id": 0.7, "id_gap": -0.1, "identity_gap": 0.1},
               {"l_cldm_own_id": 0.6, "id_gap": 0.3, "identity_gap": 0.3}]  # fmt: skip
    summary = summarise(batches)
    assert summary["id_gap_above_0"] == pytest.approx(2 / 3) and summary["identity_gap_above_0"] == pytest.approx(2 / 3)
    assert summary["l_cldm_own_id"] == pytest.approx(0.6) and summary["id_gap"] == pytest.approx(0.1)


def test_resume_continues_from_the_latest_checkpoint(trained, data_dir):
    from train.train_mmf import train

    _, out_dir = trained
    result = train(tiny_test_config(), data_dir, out_dir, max_steps=21, resume=True)
    assert result.global_step == 21
    assert [entry["step"] for entry in result.losses] == [20]
    assert (out_dir / "checkpoints" / "checkpoint-21" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def stream_data_dir(tmp_path_factory, testdata) -> Path:
    """5 records in shards of 3 and 2: epochs end mid-batch, and two consumers get unequal shares."""
    directory = tmp_path_factory.mktemp("idzoom-stream")
    photos = [testdata / "portraits" / "barack_obama" / "1.jpg", testdata / "portraits" / "joe_biden" / "1.jpg"]
    with ShardWriter(directory, records_per_shard=3) as writer:
        for index in range(5):
            writer.write(synthetic_record(photos[index % 2], index))
    return directory


def run_recording_keys(config, data_dir, out_dir, max_steps, resume=False) -> list[list[str]]:
    from train.train_mmf import train

    keys = []
    train(config, data_dir, out_dir, max_steps=max_steps, resume=resume, on_batch=lambda b: keys.append(b["key"]))
    return keys


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_run_sees_the_same_samples_and_ends_with_the_same_weights(
    stream_data_dir, tmp_path, fresh_accelerator_state, workers
):
    """Interrupted after step 1 and resumed to step 3 == straight to step 3: the same batches (keys) in the same
    order, and bit-identical weights (CPU, same ops in the same order; noise, null text and the condition choice
    are replayed too). 3 micro-batches per step, so with 2 workers the resumed loader starts on the second one."""
    from safetensors.torch import load_file

    config = tiny_test_config(
        gradient_accumulation_steps=3, dataloader_num_workers=workers, shuffle_buffer=2, null_text_prob=0.5,
        clone_every=2, stages=[Stage("all", "all", 10)],
    )  # fmt: skip
    straight = run_recording_keys(config, stream_data_dir, tmp_path / "straight", 3)
    first = run_recording_keys(config, stream_data_dir, tmp_path / "resumed", 1)
    rest = run_recording_keys(config, stream_data_dir, tmp_path / "resumed", 3, resume=True)
    assert len(straight) == 9 and len(first) == 3
    assert first + rest == straight
    assert len({tuple(keys) for keys in straight}) > 1  # the stream really shuffles
    weights = [load_file(tmp_path / run / "checkpoints" / "checkpoint-3" / "model.safetensors")
               for run in ("straight", "resumed")]  # fmt: skip
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    initial = load_file(tmp_path / "resumed" / "checkpoints" / "checkpoint-1" / "model.safetensors")
    assert any(not torch.equal(initial[name], weights[1][name]) for name in initial)  # it trained after resuming


# debug_launcher forks; a process that already ran torch's OpenMP thread pool (this pytest process) can deadlock
# its forked children, so the launcher runs in a fresh interpreter.
TWO_PROCESS_SCRIPT = """
import json, sys
from pathlib import Path
from accelerate import PartialState, debug_launcher
from train.configs import load_config
from train.train_mmf import train

def run(config_path, data_dir, out_dir, max_steps, resume):
    keys = []
    result = train(load_config(config_path), data_dir, out_dir, max_steps=int(max_steps), resume=resume == "resume",
                   on_batch=lambda batch: keys.append(batch["key"]))
    state = PartialState()
    report = {"steps": result.global_step, "world": state.num_processes, "losses": result.losses, "keys": keys}
    with Path(out_dir, f"rank{state.process_index}.jsonl").open("a") as log:
        log.write(json.dumps(report) + "\\n")

config_path, data_dir, out_dir = sys.argv[1:]
for name, steps, resume in (("straight", 3, ""), ("resumed", 1, ""), ("resumed", 3, "resume")):
    debug_launcher(run, args=(config_path, data_dir, str(Path(out_dir, name)), steps, resume), num_processes=2)
"""


def test_two_processes_train_and_resume_each_process_share(stream_data_dir, tmp_path):
    """2 processes through `accelerate.debug_launcher`: losses are reduced over both, and each rank resumes its own
    share of the stream (interrupted after step 1, resumed to 3 == straight to 3: same keys per rank, same weights)."""
    from safetensors.torch import load_file

    config = tiny_test_config(shuffle_buffer=2, null_text_prob=0.5, stages=[Stage("all", "all", 10)]).to_dict()
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({"base_config": "tiny", **config}))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", TWO_PROCESS_SCRIPT, str(config_path), str(stream_data_dir), str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    reports = {(run, rank): [json.loads(line) for line in (tmp_path / run / f"rank{rank}.jsonl").open()]
               for run in ("straight", "resumed") for rank in (0, 1)}  # fmt: skip
    straight = [reports["straight", rank][0] for rank in (0, 1)]
    assert all(report["world"] == 2 and report["steps"] == 3 for report in straight)
    assert straight[0]["losses"] == straight[1]["losses"]  # logged losses are reduced over both processes
    assert straight[0]["keys"] != straight[1]["keys"]  # each process streams its own share
    assert (tmp_path / "straight" / "final" / "magicid.json").is_file()
    for rank in (0, 1):
        first, rest = reports["resumed", rank]
        assert len(straight[rank]["keys"]) == 3 and first["keys"] + rest["keys"] == straight[rank]["keys"]
    weights = [load_file(tmp_path / run / "checkpoints" / "checkpoint-3" / "model.safetensors")
               for run in ("straight", "resumed")]  # fmt: skip
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_pretrained_base_from_a_local_diffusers_folder(tiny_components, data_dir, tmp_path):
    """The non-tiny loading path (`from_pretrained` of an SD1.5 folder + CLIP-vision), on tiny weights saved to disk."""
    from magicid.config import ProfileConfig
    from magicid.perception import DlibEmbedder
    from magicid.profiles import load_profile
    from train.train_mmf import train

    base = tmp_path / "sd15"
    for name in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
        getattr(tiny_components, name).save_pretrained(base / name)
    tiny_components.image_encoder.save_pretrained(tmp_path / "clip")
    config = tiny_test_config(base=str(base), vae=None, image_encoder=str(tmp_path / "clip"), train_batch_size=1)
    result = train(config, data_dir, tmp_path / "out", max_steps=1)
    assert result.global_step == 1 and np.isfinite(result.losses[0]["loss"])
    metadata = json.loads((tmp_path / "out" / "final" / "magicid.json").read_text())
    assert (metadata["base_model"], metadata["vae"]) == (str(base), None)
    profile = ProfileConfig(name="magicid", magicid_weights=str(tmp_path / "out" / "final"))
    pipe, encoder = load_profile(profile, DlibEmbedder())
    assert encoder.resampler.config.id_embeddings_dim == EMBED_DIM
    assert list(pipe.unet.config.block_out_channels) == list(tiny_components.unet.config.block_out_channels)


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one mixed-precision setting per process; this test needs another one (as accelerate's own
    tests do, through its internal reset)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def test_bf16_mixed_precision_with_gradient_accumulation(data_dir, tmp_path, fresh_accelerator_state):
    from safetensors.torch import load_file

    from train.train_mmf import train

    config = tiny_test_config(mixed_precision="bf16", gradient_accumulation_steps=2)
    result = train(config, data_dir, tmp_path, max_steps=2)
    assert [entry["step"] for entry in result.losses] == [0, 1]
    weights = load_file(next((tmp_path / "final" / "controlnet").glob("*.safetensors")))
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}  # trained weights stay fp32
    assert (tmp_path / "validation" / "step-2-0.png").is_file()  # validation runs under autocast


def test_cli_reports_bad_data_folder_in_one_line(tmp_path, capsys):
    from train.train_mmf import main

    assert main(["--config", "tiny", "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no finished shards" in capsys.readouterr().err


def test_paper_config_defaults_and_stage_schedule(tmp_path):
    from magicid.errors import TrainingDataError
    from train.configs import paper_config

    paper = paper_config()
    assert (paper.learning_rate, paper.cfa_weight, paper.clone_every, paper.null_text_prob) == (1e-4, 0.2, 10, 0.1)
    assert [(stage.condition, stage.steps) for stage in paper.stages] == [
        ("landmarks", 50_000), ("skeleton", 100_000), ("all", 1_000_000)
    ]  # fmt: skip
    assert paper.stage_at(49_999).condition == "landmarks" and paper.stage_at(50_000).condition == "skeleton"
    assert paper.stage_at(150_000).condition == "all" and paper.stage_at(10**8).condition == "all"
    overrides = tmp_path / "run.json"
    overrides.write_text(json.dumps({"base_config": "tiny", "resolution": 512, "cfa_min_resolution": 32}))
    custom = load_config(str(overrides))
    assert (custom.base, custom.resolution, custom.cfa_min_resolution) == ("tiny", 512, 32)
    overrides.write_text(json.dumps({"learning_rat": 1}))
    with pytest.raises(TrainingDataError, match="learning_rat"):
        load_config(str(overrides))


def test_training_example_crops_around_the_face(data_dir):
    from transformers import CLIPImageProcessor

    from magicid.tiny import tiny_tokenizer
    from train.dataset import condition_images, face_square, training_example
    from train.idzoom import read_dataset

    record = read_dataset(data_dir)[0]
    tokenizer = tiny_tokenizer()
    example = training_example(record, RESOLUTION, tokenizer, CLIPImageProcessor(), null_text=False)
    assert example["pixel_values"].shape == (3, RESOLUTION, RESOLUTION)
    assert -1.0 <= example["pixel_values"].min() < example["pixel_values"].max() <= 1.0
    x0, y0, x1, y1 = example["face_box"].tolist()
    crop_x0, crop_y0, crop_x1, _ = face_square(record.image.size, record.face_box)
    assert crop_x1 - crop_x0 == min(record.image.size)
    assert crop_x0 < record.face_box[0] and record.face_box[2] < crop_x1  # the square keeps the face
    assert x0 == pytest.approx((record.face_box[0] - crop_x0) / (crop_x1 - crop_x0), abs=0.02)
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    null = training_example(record, RESOLUTION, tokenizer, CLIPImageProcessor(), null_text=True)
    assert not torch.equal(null["input_ids"], example["input_ids"])
    batch = {key: value.unsqueeze(0).repeat(6, *[1] * value.ndim) for key, value in example.items()}
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(condition_images(batch, "landmarks", generator), batch["landmarks"])
    mixed = condition_images(batch, "all", generator)
    both = torch.maximum(batch["skeleton"], batch["landmarks"])
    assert all(any(torch.equal(mixed[i], option[i]) for option in (batch["landmarks"], batch["skeleton"], both))
               for i in range(6))  # fmt: skip
