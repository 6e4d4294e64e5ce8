"""Model profiles, resolved in one place: which weights make up the pipeline and the identity encoder.

- `tiny`: SD1.5-architecture classes at miniature sizes, seeded (magicid.tiny) + the real offline face models.
  Runs anywhere in seconds; its outputs come from a miniature *untrained* model and are not photographs.
- `mini`: MagicID-mini (magicid.mini), the whole method trained here at 128 px on CelebA faces (train/mini_*),
  shipped in assets/: small, rough portraits that are really conditioned on pose and identity. The offline default.
- `hub`: public weights (Realistic Vision SD1.5, OpenPose ControlNet v1.1, IP-Adapter-FaceID-PlusV2 + CLIP ViT-H,
  insightface ArcFace). MagicID's own weights are not public, so `F_id` enters the UNet through the IP-Adapter
  (the paper's IP-Adapter baseline) and the ControlNet gets the text only.
- `magicid`: a folder (or Hub repo) written by `train/` via `save_magicid_weights`: the ControlNet with ID
  cross-attention (Eq. 1) and the resampler.

Every id comes from `ProfileConfig` (env MAGICID_*, CLI flags). With `HF_HUB_OFFLINE=1` nothing is downloaded.
A missing component raises one `MissingWeightsError` that names it and says how to get it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Callable, TypeVar

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from huggingface_hub.errors import HfHubHTTPError
from safetensors.torch import load_file, save_file
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from magicid.config import ProfileConfig
from magicid.errors import InvalidSettingError, MagicIDError, MissingWeightsError
from magicid.identity import IdentityEncoder
from magicid.mgmica import (
    adopt_ip_adapter_processors,
    id_attention_state_dict,
    install_id_attention,
    load_id_attention_state_dict,
)
from magicid.mini import MINI, mini_base_components
from magicid.perception import FaceEmbedder, get_face_embedder
from magicid.pipeline import MagicIDPipeline
from magicid.resampler import IDResampler
from magicid.tiny import ID_TOKENS, TinyComponents, build_tiny_components, sd15_scheduler_config


logger = logging.getLogger(__name__)
T = TypeVar("T")

TINY_NOTICE = (
    "tiny profile: a miniature UNTRAINED model, built offline; its outputs are abstract test pictures, not "
    "photographs."
)
TINY_CLI_ADVICE = (
    "For real images run with --profile hub (Hugging Face Hub access or a filled cache) or "
    "--profile magicid --magicid-weights FOLDER (weights trained with train/)."
)
MINI_NOTICE = (
    "mini profile: MagicID-mini, a miniature of the method trained on about 5,600 CelebA face photos at 128 px "
    "(non-commercial research data, 3,300 MMF steps); it makes small, rough face pictures that follow the pose and the "
    "identity only weakly, not photographs. For photographs use the hub profile, or MagicID weights on an SD1.5 "
    "model, on a GPU."
)
MAGICID_FILES = ("controlnet", "id_attention.safetensors", "resampler", "magicid.json")
TINY = "tiny"  # as base_model / image_encoder in magicid.json: the tiny profile's components
ZERO_CONV_STD = 0.05


def load_profile(
    config: ProfileConfig, embedder: FaceEmbedder | None = None
) -> tuple[MagicIDPipeline, IdentityEncoder]:
    """Build the pipeline and identity encoder of `config.name`, on `config.device` in `config.dtype`."""
    loaders = {"tiny": _load_tiny, "mini": _load_mini, "hub": _load_hub, "magicid": _load_magicid}
    if config.name not in loaders:
        raise MagicIDError(f"Unknown profile {config.name!r}: choose one of {', '.join(loaders)}")
    device, dtype = resolve_device(config), resolve_dtype(config)  # a bad device fails before any download
    logger.info("loading the %s profile", config.name)
    if config.insightface_root:  # perception finds ArcFace through this variable
        os.environ["MAGICID_INSIGHTFACE_ROOT"] = str(config.insightface_root)
    pipe, encoder = loaders[config.name](config, embedder)
    with _filtered("diffusers.models.modeling_utils", _NoEmptyFloat32List()):
        for model in (pipe, encoder.resampler, encoder.image_encoder):
            cast = {"dtype": dtype} if dtype != model.dtype else {}  # no-op casts make diffusers warn
            model.to(device=device, **cast)
    return pipe, encoder


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(config: ProfileConfig) -> torch.device:
    """The configured device (default: cuda when present, else cpu); `InvalidSettingError` for one that is not here."""
    name = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise InvalidSettingError(f"device {name!r} is not a torch device: use cpu or cuda") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidSettingError("device cuda was asked for, but this machine has no usable GPU: use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InvalidSettingError(f"device {name!r} is not supported: use cpu or cuda")
    return device


def resolve_dtype(config: ProfileConfig) -> torch.dtype:
    if config.dtype:
        if str(config.dtype) not in DTYPES:
            raise InvalidSettingError(f"dtype {config.dtype!r} is not supported: use one of {', '.join(DTYPES)}")
        return DTYPES[str(config.dtype)]
    return torch.float16 if resolve_device(config).type == "cuda" else torch.float32


def is_offline() -> bool:
    """`HF_HUB_OFFLINE` read at call time (huggingface_hub reads it only once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def local_files_only(repo_or_folder: str) -> bool:
    """Whether to use the local cache only: `HF_HUB_OFFLINE`, or a Hub repo id while the Hub does not answer.

    One quick request decides, because on a closed network every component's download would otherwise retry for
    minutes before the missing-weights error could name it.
    """
    if is_offline():
        return True
    if repo_or_folder in ("", TINY, MINI) or Path(repo_or_folder).expanduser().exists():
        return False
    return not hub_reachable(repo_or_folder)


def hub_reachable(repo_id: str, timeout: float = 5.0) -> bool:
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(repo_id, timeout=timeout)
    except HfHubHTTPError:
        return True  # the Hub answered (e.g. a gated or unknown repo): downloads can say what is wrong
    except Exception as error:  # noqa: BLE001 - any transport failure (DNS, refused, timeout) means "no Hub here"
        logger.warning("The Hugging Face Hub is unreachable (%s): using locally cached weights only", error)
        return False
    return True


# --- tiny ---------------------------------------------------------------------------------------------------


def build_tiny_pipeline(components: TinyComponents | None = None) -> MagicIDPipeline:
    """The tiny profile's pipeline (ID attention in the ControlNet); `components` are copied, never mutated."""
    parts = copy.deepcopy(components) if components is not None else build_tiny_components()
    wake_zero_convolutions(parts.controlnet)
    install_id_attention(parts.controlnet, num_tokens=ID_TOKENS)
    return MagicIDPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.unet,
        controlnet=parts.controlnet,
        scheduler=parts.scheduler,
        feature_extractor=parts.feature_extractor,
        image_encoder=parts.image_encoder,
        id_mode="controlnet",
    )


def wake_zero_convolutions(controlnet: ControlNetModel, seed: int = 0) -> None:
    """Give an untrained ControlNet's zero convolutions small seeded weights.

    A fresh `ControlNetModel.from_unet` adds exactly zero, so neither the condition nor `F_id` (which enters
    through the ControlNet) would have any effect; a trained one has learned non-zero weights here.
    """
    generator = torch.Generator().manual_seed(seed)
    for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
        noise = torch.randn(conv.weight.shape, generator=generator) * ZERO_CONV_STD
        conv.weight.data.copy_(noise.to(conv.weight.dtype))


def _load_tiny(config: ProfileConfig, embedder: FaceEmbedder | None):
    logger.info(TINY_NOTICE)
    embedder = embedder or get_face_embedder()
    pipe = build_tiny_pipeline()
    resampler = IDResampler.tiny(id_embeddings_dim=embedder.dim)
    return pipe, IdentityEncoder(resampler, pipe.image_encoder, pipe.feature_extractor, embedder)


# --- mini ---------------------------------------------------------------------------------------------------


def _load_mini(config: ProfileConfig, embedder: FaceEmbedder | None):
    """The shipped MagicID-mini: its MMF weights (magicid layout) on the shipped base UNet and TAEF2."""
    from magicid.mini import WEIGHTS_DIR

    logger.info(MINI_NOTICE)
    return _load_magicid(dataclasses.replace(config, magicid_weights=config.magicid_weights or str(WEIGHTS_DIR)),
                         embedder)  # fmt: skip


# --- hub ----------------------------------------------------------------------------------------------------


def _load_hub(config: ProfileConfig, embedder: FaceEmbedder | None):
    # IP-Adapter-FaceID needs ArcFace embeddings: fail in one line before gigabytes of downloads, not after
    embedder = embedder or _hub_face_embedder()
    local = local_files_only(config.base_model)
    if not local:
        _fetch_first(config)
    fetcher = Fetcher(local)
    components = _load_base_model(config, local, fetcher)
    controlnet = fetcher(
        "OpenPose ControlNet", config.openpose_controlnet, "MAGICID_OPENPOSE_CONTROLNET",
        lambda: ControlNetModel.from_pretrained(config.openpose_controlnet, local_files_only=local),
    )
    landmark_controlnet = fetcher(
        "face-landmark ControlNet (DIIR)", config.landmark_controlnet, "MAGICID_LANDMARK_CONTROLNET",
        lambda: ControlNetModel.from_pretrained(
            config.landmark_controlnet, subfolder=config.landmark_controlnet_subfolder, local_files_only=local
        ),
    )
    image_encoder = _load_image_encoder(config.image_encoder, local, fetcher)
    adapter_file = fetcher(
        "IP-Adapter FaceID-Plus", f"{config.ip_adapter_repo}/{config.ip_adapter_weight}",
        "MAGICID_IP_ADAPTER_REPO / MAGICID_IP_ADAPTER_WEIGHT",
        lambda: fetch_file(config.ip_adapter_repo, config.ip_adapter_weight, local),
    )
    fetcher.raise_if_missing()
    pipe = MagicIDPipeline(
        **components, controlnet=controlnet, image_encoder=image_encoder,
        feature_extractor=CLIPImageProcessor(), id_mode="unet", landmark_controlnet=landmark_controlnet,
    )
    pipe.load_ip_adapter(str(adapter_file.parent), subfolder="", weight_name=adapter_file.name, image_encoder_folder=None)
    # FaceID-Plus and -PlusV2 files hold the same tensors (names and shapes); V2 only adds the CLIP shortcut at
    # inference, so the file's name is the one thing that tells them apart
    resampler = adopt_faceid_plus(pipe, shortcut="v2" in config.ip_adapter_weight.lower())
    _check_embedder(embedder, resampler, "the IP-Adapter FaceID weights")
    return pipe, IdentityEncoder(resampler, image_encoder, pipe.feature_extractor, embedder)


def _fetch_first(config: ProfileConfig) -> None:
    """Download what is missing in one announced, disk-checked, visible step. A file the Hub refuses is left to
    the loaders, whose error names every missing component."""
    from magicid.downloads import fetch_hub_files

    try:
        fetch_hub_files(config)
    except (OSError, HfHubHTTPError) as error:
        logger.info("could not fetch the hub profile's files up front: %s", error)


def _hub_face_embedder() -> FaceEmbedder:
    try:
        return get_face_embedder("arcface")
    except MissingWeightsError as error:
        raise MissingWeightsError(
            "the hub profile needs insightface's ArcFace (buffalo_l/w600k_r50.onnx, the embedder IP-Adapter-FaceID was "
            "trained on): put the buffalo_l pack under MAGICID_INSIGHTFACE_ROOT/models/ (see docs/spaces.md), or use "
            "the tiny or magicid profile, which run on dlib"
        ) from error


def fetch_file(repo_or_folder: str, filename: str, local: bool) -> Path:
    """`filename` from a local folder, else from a Hub repo (through the cache)."""
    path = Path(repo_or_folder).expanduser() / filename
    if path.is_file():
        return path
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_or_folder, filename, local_files_only=local))


def adopt_faceid_plus(pipe: MagicIDPipeline, shortcut: bool = True) -> IDResampler:
    """After `load_ip_adapter`: move the FaceID-Plus projection out of the UNet into an `IDResampler`.

    The pipeline then passes precomputed `F_id` as `(text, [F_id])`, the same convention as the ControlNet
    path, and the UNet's IP-Adapter processors become `IDAttnProcessor`s (text-only calls, Alg. 1 sums).
    """
    projection = pipe.unet.encoder_hid_proj.image_projection_layers[0]
    projection.shortcut = shortcut
    resampler = IDResampler.from_projection(projection)
    pipe.unet.encoder_hid_proj = None
    pipe.unet.config.encoder_hid_dim_type = None  # as diffusers' own unload_ip_adapter does
    adopt_ip_adapter_processors(pipe.unet)
    return resampler


def _load_base_model(config: ProfileConfig, local: bool, fetcher: Fetcher) -> dict:
    """UNet, VAE, text encoder, tokenizer and a DDIM scheduler of an SD1.5 checkpoint (diffusers layout)."""
    if config.base_model == MINI:
        return mini_base_components()
    if config.base_model == TINY:
        parts = build_tiny_components()
        return dict(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
                    scheduler=parts.scheduler)  # fmt: skip
    repo = config.base_model

    def part(cls, subfolder):
        return fetcher("base model", repo, "MAGICID_BASE_MODEL",
                       lambda: cls.from_pretrained(repo, subfolder=subfolder, local_files_only=local))  # fmt: skip

    if config.vae:
        vae = fetcher("VAE", config.vae, "MAGICID_VAE",
                      lambda: AutoencoderKL.from_pretrained(config.vae, local_files_only=local))  # fmt: skip
    else:
        vae = part(AutoencoderKL, "vae")
    return dict(
        vae=vae,
        text_encoder=part(CLIPTextModel, "text_encoder"),
        tokenizer=part(CLIPTokenizer, "tokenizer"),
        unet=part(UNet2DConditionModel, "unet"),
        scheduler=_ddim(repo, local),
    )


def _ddim(repo: str, local: bool) -> DDIMScheduler:
    """The paper samples with DDIM; use the checkpoint's noise schedule when it has one. SD1.5 checkpoints ship a
    PNDM config, which lacks DDIM's settings, and DDIM's own defaults (clipped samples, alpha 1 at the end, no step
    offset) are wrong for them: SD1.5's values are set explicitly."""
    try:
        return DDIMScheduler.from_pretrained(repo, subfolder="scheduler", local_files_only=local,
                                             clip_sample=False, set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    except (OSError, HfHubHTTPError):
        logger.info("no scheduler config in %s; using SD1.5's", repo)
        return DDIMScheduler(**sd15_scheduler_config())


def _load_image_encoder(source: str, local: bool, fetcher: Fetcher) -> CLIPVisionModelWithProjection:
    if source == TINY:
        return build_tiny_components().image_encoder

    def load():
        with _text_tower_unreported():
            return CLIPVisionModelWithProjection.from_pretrained(source, local_files_only=local)

    return fetcher("CLIP image encoder", source, "MAGICID_IMAGE_ENCODER", load)


class _OnlyUnexpectedKeys(logging.Filter):
    """Drops transformers' load report when all it lists is unused checkpoint weights: the vision encoder of a full
    CLIP checkpoint leaves its text tower unused, every run. Missing or mismatched weights are still reported."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "LOAD REPORT" not in message or "MISSING" in message or "MISMATCH" in message


class _NoEmptyFloat32List(logging.Filter):
    """Drops diffusers' "modules ... should be kept in float32: []" warning, printed for every model cast to float16
    although the list of such modules is empty."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


def _text_tower_unreported():
    return _filtered("transformers.modeling_utils", _OnlyUnexpectedKeys())


@contextlib.contextmanager
def _filtered(logger_name: str, log_filter: logging.Filter):
    target = logging.getLogger(logger_name)
    target.addFilter(log_filter)
    try:
        yield
    finally:
        target.removeFilter(log_filter)


# --- magicid ------------------------------------------------------------------------------------------------


def _load_magicid(config: ProfileConfig, embedder: FaceEmbedder | None):
    folder = magicid_folder(config.magicid_weights, local_files_only(config.magicid_weights or ""))
    metadata = json.loads((folder / "magicid.json").read_text())
    effective = _with_metadata_defaults(config, metadata)
    local = local_files_only(effective.base_model)
    resampler = IDResampler.from_pretrained(folder / "resampler")
    controlnet = ControlNetModel.from_pretrained(folder / "controlnet")
    install_id_attention(controlnet, num_tokens=resampler.num_tokens)
    try:
        load_id_attention_state_dict(controlnet, load_file(folder / "id_attention.safetensors"))
    except ValueError as error:
        raise MissingWeightsError(f"{folder}/id_attention.safetensors does not match its controlnet/: {error}") from error
    fetcher = Fetcher(local)
    image_encoder = _load_image_encoder(effective.image_encoder, local, fetcher)
    components = _load_base_model(effective, local, fetcher)
    fetcher.raise_if_missing()
    pipe = MagicIDPipeline(
        **components, controlnet=controlnet, image_encoder=image_encoder,
        feature_extractor=CLIPImageProcessor(), id_mode="controlnet",
    )
    embedder = embedder or get_face_embedder(metadata.get("face_embedder") or _embedder_for(resampler))
    _check_embedder(embedder, resampler, f"the MagicID weights in {folder}")
    return pipe, IdentityEncoder(resampler, image_encoder, pipe.feature_extractor, embedder)


def magicid_folder(source: str | None, local: bool) -> Path:
    """A local folder with MagicID's layout, or a Hub repo downloaded into the cache."""
    if not source:
        raise MissingWeightsError(
            "The magicid profile needs trained weights: pass --magicid-weights FOLDER_OR_REPO "
            "(or set MAGICID_MAGICID_WEIGHTS); train them with train/train_mmf.py"
        )
    path = Path(source).expanduser()
    if not path.exists():
        from huggingface_hub import snapshot_download

        fetcher = Fetcher(local)
        path = fetcher("MagicID weights", source, "MAGICID_MAGICID_WEIGHTS",
                       lambda: Path(snapshot_download(source, local_files_only=local)))  # fmt: skip
        fetcher.raise_if_missing()
    missing = [name for name in MAGICID_FILES if not (path / name).exists()]
    if missing:
        raise MissingWeightsError(
            f"MagicID weights in {path} lack {', '.join(missing)}: point --magicid-weights at a folder written by train/"
        )
    return path


def save_magicid_weights(directory: str | os.PathLike, controlnet: ControlNetModel, resampler: IDResampler,
                         metadata: dict) -> None:
    """Write the `magicid` profile's layout: controlnet/, id_attention.safetensors, resampler/, magicid.json.

    `metadata` may name `base_model` / `image_encoder` (a repo, folder, or "tiny") and `face_embedder`
    ("arcface" or "dlib"); the loader uses them unless the profile config overrides them.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _without_attention_processors(controlnet):
        controlnet.save_pretrained(directory / "controlnet")
    state = {key: value.contiguous().cpu() for key, value in id_attention_state_dict(controlnet).items()}
    save_file(state, directory / "id_attention.safetensors", metadata={"format": "ip_adapter"})
    resampler.save_pretrained(directory / "resampler")
    (directory / "magicid.json").write_text(json.dumps(metadata, indent=2, sort_keys=True))


@contextlib.contextmanager
def _without_attention_processors(model: torch.nn.Module):
    """Temporarily plain processors, so the model's own checkpoint holds no ID weights (they have their file)."""
    processors = dict(model.attn_processors)
    model.set_attn_processor(AttnProcessor2_0())
    try:
        yield
    finally:
        model.set_attn_processor(processors)


def _with_metadata_defaults(config: ProfileConfig, metadata: dict) -> ProfileConfig:
    """Fields left at their defaults take the values the weights were trained with."""
    defaults, effective = ProfileConfig(), copy.copy(config)
    for key in ("base_model", "image_encoder", "vae"):
        if key in metadata and getattr(config, key) == getattr(defaults, key):
            setattr(effective, key, metadata[key])
    return effective


def _embedder_for(resampler: IDResampler) -> str:
    return "arcface" if resampler.config.id_embeddings_dim == 512 else "dlib"


def _check_embedder(embedder: FaceEmbedder, resampler: IDResampler, what: str) -> None:
    expected = resampler.config.id_embeddings_dim
    if embedder.dim != expected:
        raise MissingWeightsError(
            f"{what} expect {expected}-d face embeddings but the {embedder.name} embedder gives {embedder.dim}-d: "
            "install the insightface ArcFace models (buffalo_l, which IP-Adapter-FaceID was trained on) under MAGICID_INSIGHTFACE_ROOT"
        )


class Fetcher:
    """Runs loaders, collecting every missing component, so one `MissingWeightsError` can name them all."""

    def __init__(self, local: bool = False):
        self.local = local  # loading from the local cache only
        self.missing: dict[str, tuple[list[str], str]] = {}  # source -> (components, override variable)

    def __call__(self, component: str, source: str, override: str, load: Callable[[], T]) -> T | None:
        try:
            return load()
        except (OSError, HfHubHTTPError) as error:
            logger.info("cannot load %s from %s: %s", component, source, error)
            components, _ = self.missing.setdefault(source, ([], override))
            if component not in components:
                components.append(component)
            return None

    def raise_if_missing(self) -> None:
        if not self.missing:
            return
        names = "; ".join(
            f"{' + '.join(components)} '{source}' (set {override})"
            for source, (components, override) in self.missing.items()
        )
        if is_offline():
            how = "HF_HUB_OFFLINE=1 is set and they are not in the local Hugging Face cache: unset it to download them"
        elif self.local:
            how = "The Hugging Face Hub is unreachable and they are not in the local cache: connect to download them"
        else:
            how = "They could not be loaded or downloaded: check the ids and the network"
        raise MissingWeightsError(f"Missing weights: {names}. {how}, or point the variables at local copies")
