"""The shipped MagicID-mini weights (assets/mini, assets/mini-base, assets/taef2): intact, described by their
card, small, and loadable: one 128 px portrait on CPU is generated and scored. (Whether its face lands at the box
is measured by `python -m magicid evaluate`, not asserted: at 3,300 MMF steps it does in about half of them; see the card.)"""

from __future__ import annotations

import hashlib
import json

import pytest

from magicid.config import GenerationConfig, ProfileConfig, default_profile_name
from magicid.mini import ASSETS, WEIGHTS_DIR


MAX_SHIPPED_BYTES = 30 * 10**6


def test_checksums_match_the_shipped_files():
    sums = json.loads((WEIGHTS_DIR / "checksums.json").read_text())
    assert any(name.startswith("mini-base/unet/") for name in sums) and "mini/id_attention.safetensors" in sums
    for name, digest in sums.items():
        assert hashlib.sha256((ASSETS / name).read_bytes()).hexdigest() == digest, name


def test_the_card_matches_the_files_and_the_total_is_small():
    card = (WEIGHTS_DIR / "README.md").read_text()
    metadata = json.loads((WEIGHTS_DIR / "magicid.json").read_text())
    assert f"step {metadata['global_step']:,}" in card and "non-commercial" in card
    files = [path for folder in ("mini", "mini-base/unet", "taef2") for path in (ASSETS / folder).rglob("*")
             if path.is_file()]  # fmt: skip
    assert sum(path.stat().st_size for path in files) <= MAX_SHIPPED_BYTES


def test_mini_is_the_offline_default(monkeypatch):
    monkeypatch.delenv("MAGICID_PROFILE", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setattr("magicid.config.hub_weights_cached", lambda config=None: False)
    assert default_profile_name() == "mini"


@pytest.fixture(scope="module")
def engine():
    from magicid.engine import MagicID

    return MagicID.from_profile(ProfileConfig(name="mini"))


def test_a_portrait_is_generated_at_128_px_and_scored(engine, testdata):
    identity = engine.encode_identity([testdata / "portraits" / "barack_obama" / "1.jpg"], name="Barack")
    result = engine.generate(GenerationConfig(prompt="a photo of a person", seed=0), [identity])
    assert result.images[0].size == (128, 128) and len(result.report) == 1
    assert any("works at 128 px" in message for message in result.messages)
    assert result.images[0].getextrema() != ((0, 0), (0, 0), (0, 0))
