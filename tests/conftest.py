"""Shared fixtures. Test photos come from ../shared/testdata (override with MAGICID_TESTDATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parent.parent


def _testdata_dir() -> Path:
    override = os.environ.get("MAGICID_TESTDATA")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    path = _testdata_dir()
    if not (path / "SOURCES.md").exists():
        raise FileNotFoundError(f"test photos not found at {path}; set MAGICID_TESTDATA to the testdata folder")
    return path


@pytest.fixture(scope="session", autouse=True)
def tiny_is_the_default_profile():
    """The suite runs on the random `tiny` profile unless a test names another: the shipped default (`mini`) is
    slower, and its own tests (test_mini_shipped, test_profiles) clear this variable to test the real default."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAGICID_PROFILE", "tiny")
        yield


@pytest.fixture(scope="session")
def tiny_components():
    """The tiny profile's diffusion components, built once per test session (read-only: copy before mutating)."""
    from magicid.tiny import build_tiny_components

    return build_tiny_components()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The tiny models and the face models are overhead-bound: on a 2-core machine that also runs the browser and
    the app server, a second OpenMP thread only oversubscribes the CPU (measured 5-10x slower under load)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
