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


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny models are overhead-bound: one thread avoids oversubscribing the shared CPU (5x faster here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_record(photo: Path, index: int) -> IDZoomRecord:
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
        key=f"synthetic{index}", source=f"synthetic/{index}.jpg", caption="a photo of a person",
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
    settings = dict(
        resolution=RESOLUTION, learning_rate=1e-3, cfa_min_resolution=4, checkpointing_steps=100,
        validation_steps=100, validation_inference_steps=2, stages=[Stage("landmark-only", "landmarks", 10),
        Stage("skeleton", "skeleton", 10), Stage("all", "all", 10)],
    )  # fmt: skip
    return load_config("tiny", **{**settings, **overrides})


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    from train.train_mmf import train

    out_dir = tmp_path_factory.mktemp("mmf")
    return train(tiny_test_config(), data_dir, out_dir, max_steps=20), out_dir


def test_tiny_run_lowers_the_loss(trained):
    result, out_dir = trained
    assert result.global_step == 20
    l_cldm = [entry["l_cldm"] for entry in result.losses]
    assert np.mean(l_cldm[-5:]) < np.mean(l_cldm[:5])
    clone_steps = [entry["step"] for entry in result.losses if "l_cfa" in entry]
    assert clone_steps == [0, 10]  # Eq. 4: L_cfa every 10 iterations
    assert {entry["stage"] for entry in result.losses} == {"landmark-only", "skeleton"}
    logged = [json.loads(line) for line in (out_dir / "logs" / "losses.jsonl").read_text().splitlines()]
    assert len(logged) == 20


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
    from magicid.config import ProfileConfig
    from magicid.perception import DlibEmbedder
    from magicid.profiles import load_profile
    from safetensors.torch import load_file

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


def test_resume_continues_from_the_latest_checkpoint(trained, data_dir):
    from train.train_mmf import train

    _, out_dir = trained
    result = train(tiny_test_config(), data_dir, out_dir, max_steps=21, resume=True)
    assert result.global_step == 21
    assert [entry["step"] for entry in result.losses] == [20]
    assert (out_dir / "checkpoints" / "checkpoint-21" / "model.safetensors").is_file()


# debug_launcher forks; a process that already ran torch's OpenMP thread pool (this pytest process) can deadlock
# its forked children, so the launcher runs in a fresh interpreter.
TWO_PROCESS_SCRIPT = """
import json, sys
from pathlib import Path
from accelerate import PartialState, debug_launcher
from train.configs import load_config
from train.train_mmf import train

def run(config_path, data_dir, out_dir):
    result = train(load_config(config_path), data_dir, out_dir, max_steps=2)
    state = PartialState()
    report = {"steps": result.global_step, "world": state.num_processes, "losses": result.losses}
    Path(out_dir, f"rank{state.process_index}.json").write_text(json.dumps(report))

debug_launcher(run, args=tuple(sys.argv[1:]), num_processes=2)
"""


def test_two_process_path_runs_with_debug_launcher(data_dir, tmp_path):
    config = tiny_test_config().to_dict()
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({"base_config": "tiny", **config}))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", TWO_PROCESS_SCRIPT, str(config_path), str(data_dir), str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(report["world"] == 2 and report["steps"] == 2 for report in reports)
    assert reports[0]["losses"] == reports[1]["losses"]  # logged losses are reduced over both processes
    assert (tmp_path / "final" / "magicid.json").is_file()


def test_cli_reports_bad_data_folder_in_one_line(tmp_path, capsys):
    from train.train_mmf import main

    assert main(["--config", "tiny", "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no finished shards" in capsys.readouterr().err
