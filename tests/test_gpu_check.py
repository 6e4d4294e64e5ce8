"""`benchmarks/gpu_check.py` at tiny size: the hub and magicid profiles load from a Hugging Face cache of the real
repo ids and run generate, DIIR and a 3-person group in bfloat16 (the float16-on-CUDA code path)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def test_the_gpu_check_runs_both_profiles_from_a_hub_cache_at_tiny_size(tmp_path, testdata):
    command = [sys.executable, str(SCRIPT), "--size", "tiny", "--device", "cpu", "--dtype", "bfloat16", "--steps", "1",
               "--out", str(tmp_path), "--evaluate", str(testdata / "portraits"), "--judge", "dlib", "--limit", "1"]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    for name in ("hub", "magicid"):
        assert report[name]["dtype"] == "torch.bfloat16"
        assert report[name]["diir_one_face"]["faces_restored"] == 1
        assert all(report[name][step]["seconds"] > 0 for step in ("load", "portrait_512", "group_3_768x512"))
        assert set(report[name]["evaluate"]["rows"]) == {"MagicID", "ID off"} and report[name]["evaluate"]["judge"] == "dlib"
    assert report["hub"]["landmark_controlnet"] and not report["magicid"]["landmark_controlnet"]
