"""The hub profile's first run: the preload list is exactly what the loader reads, the download is sized, checked
against the free disk space and visible as a progress line (the Hub itself is faked: no network here)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from magicid import downloads
from magicid.config import ProfileConfig
from magicid.downloads import GB, DownloadStatus, HubFile, check_free_space, fetch_hub_files, hub_files, plan_downloads
from magicid.errors import MissingWeightsError


REPO = Path(__file__).resolve().parent.parent


def _space_preload() -> list[HubFile]:
    header = (REPO / "README.md").read_text(encoding="utf-8").split("---")[1]
    entries = header.split("preload_from_hub:")[1].strip().splitlines()
    files = []
    for entry in entries:
        repo, names = entry.strip().removeprefix("- ").split()[:2]
        files += [HubFile(repo, name) for name in names.split(",")]
    return files


def test_the_space_preloads_exactly_the_files_the_hub_loader_reads():
    assert sorted(_space_preload(), key=str) == sorted(hub_files(ProfileConfig(name="hub")), key=str)


def test_without_a_separate_vae_the_base_models_vae_is_fetched():
    names = {file.filename for file in hub_files(ProfileConfig(name="hub", vae=None))}
    assert {"vae/config.json", "vae/diffusion_pytorch_model.safetensors"} <= names


class FakeHub:
    """hf_hub_download: `dry_run` answers from `sizes`; a download reports its bytes through `tqdm_class`."""

    def __init__(self, sizes: dict[str, int], cached: set[str] = frozenset()):
        self.sizes, self.cached, self.downloaded, self.lines = sizes, cached, [], []

    def __call__(self, repo, filename, dry_run=False, tqdm_class=None, **_):
        size = self.sizes[filename]
        if dry_run:
            return SimpleNamespace(will_download=filename not in self.cached, file_size=size)
        bar = tqdm_class(total=size, disable=True)
        bar.update(size // 2)
        self.lines.append(downloads.STATUS.line())
        bar.update(size - size // 2)
        bar.close()
        self.downloaded.append(filename)
        return f"/cache/{repo}/{filename}"


@pytest.fixture
def one_repo(monkeypatch):
    import huggingface_hub

    hub = FakeHub({"a.safetensors": 3 * GB, "b.json": GB}, cached={"b.json"})
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub)
    monkeypatch.setattr(downloads, "hub_files", lambda config: [HubFile("org/m", "a.safetensors"), HubFile("org/m", "b.json")])
    return hub


def test_only_uncached_files_are_planned_with_their_sizes(one_repo):
    plan = plan_downloads(downloads.hub_files(None))
    assert [(file.filename, size) for file, size in plan.files] == [("a.safetensors", 3 * GB)]
    assert "1 files, 3.0 GB" in plan.describe()


def test_a_download_that_does_not_fit_fails_before_it_starts(one_repo, monkeypatch):
    monkeypatch.setattr(downloads.shutil, "disk_usage", lambda path: SimpleNamespace(free=2 * GB))
    with pytest.raises(MissingWeightsError, match="need 3.0 GB but the disk of the Hugging Face cache has 2.0 GB free"):
        fetch_hub_files(ProfileConfig(name="hub"))
    assert one_repo.downloaded == [] and downloads.STATUS.line() == ""


def test_the_download_is_a_progress_line_while_it_runs(one_repo, monkeypatch):
    monkeypatch.setattr(downloads.shutil, "disk_usage", lambda path: SimpleNamespace(free=100 * GB))
    fetch_hub_files(ProfileConfig(name="hub"))
    assert one_repo.downloaded == ["a.safetensors"]
    assert one_repo.lines == ["Downloading the hub profile's weights (first run): 1.5 of 3.0 GB (50%), org/m/a.safetensors"]
    assert downloads.STATUS.line() == ""  # nothing shown once it is done


def test_free_space_is_read_on_the_nearest_existing_folder(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(downloads.shutil, "disk_usage", lambda path: seen.append(path) or SimpleNamespace(free=GB))
    plan = downloads.DownloadPlan([(HubFile("r", "f"), GB // 2)])
    check_free_space(plan, tmp_path / "not" / "yet")
    assert seen == [tmp_path]


def test_a_status_says_when_it_is_checking():
    status = DownloadStatus()
    assert status.line() == ""
    status.check()
    assert status.line().startswith("Checking which")


def test_loading_clips_vision_half_hides_only_the_unused_text_tower_report(caplog):
    import logging

    from magicid.profiles import _text_tower_unreported

    report_logger = logging.getLogger("transformers.modeling_utils")
    with caplog.at_level(logging.WARNING, logger="transformers.modeling_utils"), _text_tower_unreported():
        report_logger.warning("CLIPVisionModelWithProjection LOAD REPORT\ntext_model.x | UNEXPECTED")
        report_logger.warning("CLIPVisionModelWithProjection LOAD REPORT\nvisual_projection | MISSING")
    assert [record.getMessage().splitlines()[1] for record in caplog.records] == ["visual_projection | MISSING"]
