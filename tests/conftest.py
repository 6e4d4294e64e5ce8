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


@pytest.fixture(scope="session")
def tiny_components():
    """The tiny profile's diffusion components, built once per test session (read-only: copy before mutating)."""
    from magicid.tiny import build_tiny_components

    return build_tiny_components()
