"""Checkpoints in the on-disk layouts our users' machines have: IP-Adapter-FaceID's original `.bin` keys (with its
LoRA), and the Hugging Face cache (`models--org--name/snapshots/<commit>/...`) of every repo the hub profile reads.
Shared by the profile tests (tiny size) and `benchmarks/gpu_check.py` (SD1.5 size)."""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from diffusers.models.embeddings import IPAdapterFaceIDPlusImageProjection

from magicid.config import ProfileConfig
from magicid.downloads import hub_files
from magicid.mgmica import id_attention_state_dict, install_id_attention


FAKE_COMMIT = "0" * 40


def to_original_faceid_plus_keys(projection: IPAdapterFaceIDPlusImageProjection) -> dict[str, torch.Tensor]:
    """diffusers' FaceID-Plus projection -> the key names of IP-Adapter's original checkpoint (`image_proj`)."""
    renames = {"proj.net.0.proj.": "proj.0.", "proj.net.2.": "proj.2.", "norm.": "norm."}
    original = {}
    for key, value in projection.state_dict().items():
        for new, old in renames.items():
            if key.startswith(new):
                original[old + key[len(new):]] = value
                break
        else:
            original.update(_perceiver_key(key, value, projection.state_dict()))
    return original


def _perceiver_key(key: str, value: torch.Tensor, state: dict) -> dict[str, torch.Tensor]:
    prefix = "perceiver_resampler."
    if not key.startswith("layers."):
        return {prefix + key: value}
    _, index, rest = key.split(".", 2)
    layer = f"{prefix}layers.{index}."
    mapping = {
        "ln0.": "0.norm1.", "ln1.": "0.norm2.", "attn.to_q.": "0.to_q.", "attn.to_out.0.": "0.to_out.",
        "ff.0.": "1.0.", "ff.1.net.0.proj.": "1.1.", "ff.1.net.2.": "1.3.",
    }  # fmt: skip
    if rest == "attn.to_k.weight":
        return {layer + "0.to_kv.weight": torch.cat([value, state[f"layers.{index}.attn.to_v.weight"]])}
    if rest == "attn.to_v.weight":
        return {}
    for new, old in mapping.items():
        if rest.startswith(new):
            return {layer + old + rest[len(new):]: value}
    raise KeyError(key)


LORA_RANK = 4


def faceid_lora(unet) -> dict[str, torch.Tensor]:
    """The LoRA tensors an IP-Adapter-FaceID file carries for every attention layer (`{index}.to_q_lora.down.weight`
    ...), at tiny size; non-zero `up` weights, so an applied LoRA changes the output."""
    generator = torch.Generator().manual_seed(3)
    tensors = {}
    for index, name in enumerate(unet.attn_processors):
        attn = unet.get_submodule(name.removesuffix(".processor"))
        projections = {"to_q": attn.to_q, "to_k": attn.to_k, "to_v": attn.to_v, "to_out": attn.to_out[0]}
        for kind, linear in projections.items():
            tensors[f"{index}.{kind}_lora.down.weight"] = torch.randn(LORA_RANK, linear.in_features, generator=generator)
            tensors[f"{index}.{kind}_lora.up.weight"] = torch.randn(linear.out_features, LORA_RANK, generator=generator) * 0.1
    return tensors


def faceid_file(unet, projection: IPAdapterFaceIDPlusImageProjection, path: Path) -> dict[str, torch.Tensor]:
    """Write an IP-Adapter-FaceID-Plus(V2) `.bin` for `unet` (random ID K/V and LoRA, `projection`'s weights);
    returns the ID K/V tensors."""
    with_ids = copy.deepcopy(unet)
    install_id_attention(with_ids)
    adapter = {key: torch.randn_like(value) for key, value in id_attention_state_dict(with_ids).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"image_proj": to_original_faceid_plus_keys(projection), "ip_adapter": {**adapter, **faceid_lora(with_ids)}},
               path)  # fmt: skip
    return adapter


def write_hub_cache(cache: Path, config: ProfileConfig, parts, projection: IPAdapterFaceIDPlusImageProjection) -> None:
    """`parts` (a `TinyComponents`-like bundle) saved as the Hub cache of every repo `config` reads, exactly the
    files `magicid.downloads.hub_files(config)` lists, so the loader runs with `HF_HUB_OFFLINE=1`."""
    with tempfile.TemporaryDirectory() as staging:
        folders = _save_repos(Path(staging), config, parts, projection)
        for file in hub_files(config):
            snapshot = cache / f"models--{file.repo.replace('/', '--')}" / "snapshots" / FAKE_COMMIT
            target = snapshot / file.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folders[file.repo] / file.filename, target)
            (snapshot.parent.parent / "refs").mkdir(exist_ok=True)
            (snapshot.parent.parent / "refs" / "main").write_text(FAKE_COMMIT)


def _as_sd15_tokenizer_files(folder: Path) -> None:
    """SD1.5 repos ship CLIP's tokenizer as vocab.json + merges.txt (no tokenizer.json): write it that way."""
    import json

    model = json.loads((folder / "tokenizer.json").read_text())["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in model["merges"]]
    (folder / "merges.txt").write_text("".join(f"{merge}\n" for merge in ["#version: 0.2", *merges]))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}  # fmt: skip
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer.json").unlink()


def _save_repos(staging: Path, config: ProfileConfig, parts, projection) -> dict[str, Path]:
    folders = {repo: staging / repo.replace("/", "--") for repo in
               (config.base_model, config.vae, config.openpose_controlnet, config.landmark_controlnet,
                config.ip_adapter_repo, config.image_encoder) if repo}  # fmt: skip
    StableDiffusionPipeline(parts.vae, parts.text_encoder, parts.tokenizer, parts.unet, parts.scheduler, None, None,
                            None, False).save_pretrained(folders[config.base_model])  # fmt: skip
    _as_sd15_tokenizer_files(folders[config.base_model] / "tokenizer")
    if config.vae:
        parts.vae.save_pretrained(folders[config.vae])
    parts.controlnet.save_pretrained(folders[config.openpose_controlnet])
    landmark = folders[config.landmark_controlnet]
    parts.controlnet.save_pretrained(landmark / config.landmark_controlnet_subfolder if config.landmark_controlnet_subfolder else landmark)
    parts.image_encoder.save_pretrained(folders[config.image_encoder])
    parts.feature_extractor.save_pretrained(folders[config.image_encoder])
    faceid_file(parts.unet, projection, folders[config.ip_adapter_repo] / config.ip_adapter_weight)
    return folders
