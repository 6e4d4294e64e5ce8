"""The hub profile's first run: which files it reads, how much of them must be downloaded, whether that fits on
the disk, and a progress line the app can show while it happens (not only tqdm bars on stderr).

`hub_files` is the one list of the files the hub loader reads; the Space's `preload_from_hub` (README.md) is
tested against it.
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from magicid.config import ProfileConfig
from magicid.errors import MissingWeightsError


logger = logging.getLogger(__name__)

GB = 1024**3
FREE_SPACE_MARGIN = 1.05  # partial downloads and lock files need a little more than the files themselves


@dataclass(frozen=True)
class HubFile:
    repo: str
    filename: str


def hub_files(config: ProfileConfig) -> list[HubFile]:
    """Every file `_load_hub` reads from the Hub for `config` (sources that are local folders are left out)."""
    base = ["model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
            "text_encoder/model.safetensors", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
            "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors"]  # fmt: skip
    model = ["config.json", "diffusion_pytorch_model.safetensors"]
    landmark = [f"{config.landmark_controlnet_subfolder}/{name}" if config.landmark_controlnet_subfolder else name
                for name in model]  # fmt: skip
    wanted = [
        (config.base_model, base if config.vae else [*base, "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]),
        (config.vae, model),
        (config.openpose_controlnet, model),
        (config.landmark_controlnet, landmark),
        (config.ip_adapter_repo, [config.ip_adapter_weight]),
        (config.image_encoder, ["config.json", "model.safetensors", "preprocessor_config.json"]),
    ]
    return [HubFile(repo, name) for repo, names in wanted if repo and not _is_local(repo) for name in names]


def _is_local(source: str) -> bool:
    return Path(source).expanduser().exists()


@dataclass
class DownloadPlan:
    """The files not yet in the local Hugging Face cache, with their sizes (0 where the Hub gives none)."""

    files: list[tuple[HubFile, int]] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def describe(self) -> str:
        return (f"First run of the hub profile: downloading {len(self.files)} files, {self.total_bytes / GB:.1f} GB, "
                "into the Hugging Face cache (once; later runs load from it)")  # fmt: skip


def plan_downloads(files: list[HubFile]) -> DownloadPlan:
    """Ask the Hub (metadata only) which of `files` must be downloaded and how big they are."""
    from huggingface_hub import hf_hub_download

    plan = DownloadPlan()
    for file in files:
        info = hf_hub_download(file.repo, file.filename, dry_run=True)
        if info.will_download:
            plan.files.append((file, int(info.file_size or 0)))
    return plan


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def check_free_space(plan: DownloadPlan, directory: Path | None = None) -> None:
    """Fail in one line, before anything is downloaded, when the plan does not fit on the cache's disk."""
    directory = directory or cache_dir()
    existing = next((path for path in (directory, *directory.parents) if path.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    if plan.total_bytes * FREE_SPACE_MARGIN > free:
        raise MissingWeightsError(
            f"The hub profile's weights need {plan.total_bytes / GB:.1f} GB but the disk of the Hugging Face cache has "
            f"{free / GB:.1f} GB free: free some space, or set HF_HOME to a folder on a larger disk"
        )


@dataclass
class DownloadStatus:
    """Process-wide download progress (one download serves every session), safe to read from any thread."""

    total_bytes: int = 0
    done_bytes: int = 0
    current: str = ""
    checking: bool = False
    active: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check(self) -> None:
        with self._lock:
            self.checking = True

    def start(self, plan: DownloadPlan) -> None:
        with self._lock:
            self.total_bytes, self.done_bytes, self.active, self.checking = plan.total_bytes, 0, True, False

    def advance(self, count: int, current: str) -> None:
        with self._lock:
            self.done_bytes += count
            self.current = current

    def finish(self) -> None:
        with self._lock:
            self.active, self.checking, self.current = False, False, ""

    def line(self) -> str:
        """'Downloading the hub profile's weights: 3.2 of 11.3 GB (28%), unet/...' or '' when idle."""
        with self._lock:
            if self.checking:
                return "Checking which of the hub profile's weights must be downloaded..."
            if not self.active:
                return ""
            share = self.done_bytes / self.total_bytes if self.total_bytes else 0.0
            return (f"Downloading the hub profile's weights (first run): {self.done_bytes / GB:.1f} of "
                    f"{self.total_bytes / GB:.1f} GB ({share:.0%}), {self.current}")  # fmt: skip


STATUS = DownloadStatus()


def _reporting_bar(status: DownloadStatus, name: str) -> type:
    class ReportingBar(tqdm):
        """tqdm as usual on stderr, and every byte counted in `status`."""

        def update(self, n=1):
            status.advance(int(n or 0), name)
            return super().update(n)

    return ReportingBar


def download(plan: DownloadPlan, status: DownloadStatus = STATUS) -> None:
    from huggingface_hub import hf_hub_download

    status.start(plan)
    for file, _ in plan.files:
        name = f"{file.repo}/{file.filename}"
        hf_hub_download(file.repo, file.filename, tqdm_class=_reporting_bar(status, name))


def fetch_hub_files(config: ProfileConfig, status: DownloadStatus = STATUS) -> None:
    """Before loading the hub profile online: say how much will be downloaded, check the disk, download it."""
    status.check()
    try:
        plan = plan_downloads(hub_files(config))
        if plan.files:
            logger.warning(plan.describe())
            check_free_space(plan)
            download(plan, status)
    finally:
        status.finish()
