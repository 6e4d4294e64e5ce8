"""Profiles: tiny checkpoints written in each profile's on-disk layout load and run; missing weights name themselves."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionPipeline
from diffusers.models.embeddings import IPAdapterFaceIDPlusImageProjection
from hub_layout import faceid_file
from PIL import Image

from magicid.config import ProfileConfig
from magicid.errors import MissingWeightsError
from magicid.mgmica import IDAttnProcessor, id_attention_state_dict
from magicid.profiles import build_tiny_pipeline, load_profile, save_magicid_weights
from magicid.resampler import IDResampler


# a real file name in h94/IP-Adapter-FaceID; PlusV2 has the same keys (its shortcut needs 768 == 768 dims, while
# the converter fixes the perceiver width to a multiple of 64 and the tiny UNet is 32 wide)
FACEID_PLUS_FILE = "ip-adapter-faceid-plus_sd15.bin"


class FakeEmbedder:
    """Stands in for the face embedder; loading does not look at faces."""

    def __init__(self, dim: int):
        self.name, self.dim = f"fake{dim}", dim


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))


def run_once(pipe, id_tokens, id_scale=1.0):
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        "a portrait", Image.new("RGB", (64, 64), "white"), id_embeds=id_tokens, id_scale=id_scale,
        num_inference_steps=2, width=64, height=64, output_type="np", generator=torch.Generator().manual_seed(0),
    ).images


def encode(encoder, face_dim: int) -> torch.Tensor:
    clip = encoder.clip_features([Image.new("RGB", (224, 224), "gray")])
    with torch.no_grad():
        return encoder.resampler(torch.ones(1, face_dim) / face_dim**0.5, clip)


@pytest.fixture(scope="module")
def hub_folders(tmp_path_factory, tiny_components):
    """Tiny checkpoints in the hub profile's layouts: an SD1.5 diffusers folder, a ControlNet folder, a CLIP
    vision folder, and a FaceID-PlusV2 .bin with the real file's keys."""
    root = tmp_path_factory.mktemp("hub")
    parts = tiny_components
    StableDiffusionPipeline(
        parts.vae, parts.text_encoder, parts.tokenizer, parts.unet, parts.scheduler, None, None, None, False
    ).save_pretrained(root / "base")
    parts.controlnet.save_pretrained(root / "controlnet")
    parts.controlnet.save_pretrained(root / "landmark" / "diffusion_sd15")  # the public model's subfolder layout
    parts.image_encoder.save_pretrained(root / "clip")

    torch.manual_seed(1)
    projection = IPAdapterFaceIDPlusImageProjection(
        embed_dims=64, output_dims=32, hidden_dims=32, id_embeddings_dim=512, heads=1, dim_head=64, depth=4
    )
    adapter = faceid_file(parts.unet, projection, root / "ipa" / FACEID_PLUS_FILE)
    return root, projection, adapter


def hub_config(root) -> ProfileConfig:
    """The hub profile pointed at the tiny checkpoints of `hub_folders`."""
    return ProfileConfig(
        name="hub", base_model=str(root / "base"), vae=None, openpose_controlnet=str(root / "controlnet"),
        ip_adapter_repo=str(root / "ipa"), ip_adapter_weight=FACEID_PLUS_FILE, image_encoder=str(root / "clip"),
        landmark_controlnet=str(root / "landmark"),
    )  # fmt: skip


def test_tiny_profile_loads_offline_with_consistent_sizes():
    pipe, encoder = load_profile(ProfileConfig(name="tiny"), embedder=FakeEmbedder(128))
    assert pipe.id_mode == "controlnet"
    assert encoder.resampler.config.id_embeddings_dim == 128
    tokens = encode(encoder, 128)
    assert tokens.shape == (1, 4, pipe.controlnet.config.cross_attention_dim)


def test_hub_layout_loads_faceid_plusv2_weights_and_runs(hub_folders):
    root, projection, adapter = hub_folders
    config = hub_config(root)
    pipe, encoder = load_profile(config, embedder=FakeEmbedder(512))
    assert pipe.id_mode == "unet" and pipe.unet.encoder_hid_proj is None
    assert isinstance(pipe.landmark_controlnet, ControlNetModel)  # DIIR's landmark condition in this profile
    loaded = encoder.resampler.projection.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in projection.state_dict().items())
    assert encoder.resampler.config.shortcut is False  # "v2" only in the PlusV2 file name
    assert all(torch.equal(id_attention_state_dict(pipe.unet)[key], value) for key, value in adapter.items())
    assert any(isinstance(p, IDAttnProcessor) for p in pipe.unet.attn_processors.values())
    assert "faceid_0" in pipe.unet.peft_config  # the file's LoRA is applied (diffusers needs PEFT for it)
    assert pipe.unet.get_submodule("mid_block.attentions.0.transformer_blocks.0.attn1.to_q").lora_A

    tokens = encode(encoder, 512)
    assert tokens.shape == (1, 4, 32)
    assert not torch.allclose(torch.tensor(run_once(pipe, tokens)), torch.tensor(run_once(pipe, tokens, 0.0)))
    assert (run_once(pipe, tokens, 0.0) == run_once(pipe, None)).all()


def test_hub_profile_refuses_a_face_embedder_of_the_wrong_size(hub_folders):
    root, _, _ = hub_folders
    config = hub_config(root)
    with pytest.raises(MissingWeightsError, match="512-d.*ArcFace"):
        load_profile(config, embedder=FakeEmbedder(128))


def test_magicid_layout_round_trip(tmp_path, tiny_components):
    pipe = build_tiny_pipeline(tiny_components)
    for processor in pipe.controlnet.attn_processors.values():
        if isinstance(processor, IDAttnProcessor):
            torch.nn.init.normal_(processor.to_k_ip[0].weight, std=0.2)
    resampler = IDResampler.tiny(id_embeddings_dim=128)
    save_magicid_weights(tmp_path, pipe.controlnet, resampler,
                         {"base_model": "tiny", "image_encoder": "tiny", "face_embedder": "dlib"})  # fmt: skip
    assert json.loads((tmp_path / "magicid.json").read_text())["base_model"] == "tiny"
    assert any(isinstance(p, IDAttnProcessor) for p in pipe.controlnet.attn_processors.values())  # restored
    with open(tmp_path / "controlnet" / "config.json") as handle:
        assert json.load(handle)["cross_attention_dim"] == 32

    loaded, encoder = load_profile(ProfileConfig(name="magicid", magicid_weights=str(tmp_path)), FakeEmbedder(128))
    expected, actual = id_attention_state_dict(pipe.controlnet), id_attention_state_dict(loaded.controlnet)
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
    zero_conv = pipe.controlnet.controlnet_mid_block.weight
    assert torch.equal(loaded.controlnet.controlnet_mid_block.weight, zero_conv)
    assert all(torch.equal(a, b) for a, b in zip(encoder.resampler.state_dict().values(), resampler.state_dict().values()))
    tokens = encode(encoder, 128)
    assert run_once(loaded, tokens).shape == (1, 64, 64, 3)


def test_missing_hub_weights_offline_name_the_component():
    with pytest.raises(MissingWeightsError) as error:
        load_profile(ProfileConfig(name="hub"), embedder=FakeEmbedder(512))
    message = str(error.value)
    defaults = ProfileConfig()
    components = ("base model", "VAE", "OpenPose ControlNet", "face-landmark ControlNet", "CLIP image encoder",
                  "IP-Adapter FaceID-Plus")  # fmt: skip
    for component in components:
        assert component in message
    for source in (defaults.base_model, defaults.openpose_controlnet, defaults.ip_adapter_weight, defaults.image_encoder):
        assert source in message
    assert "HF_HUB_OFFLINE" in message and "MAGICID_BASE_MODEL" in message and "\n" not in message


def test_missing_magicid_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(MissingWeightsError, match="--magicid-weights"):
        load_profile(ProfileConfig(name="magicid"), embedder=FakeEmbedder(128))
    (tmp_path / "magicid.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="controlnet, id_attention.safetensors, resampler"):
        load_profile(ProfileConfig(name="magicid", magicid_weights=str(tmp_path)), embedder=FakeEmbedder(128))
    with pytest.raises(MissingWeightsError, match="MagicID weights 'nobody/no-such-repo'.*HF_HUB_OFFLINE"):
        load_profile(ProfileConfig(name="magicid", magicid_weights="nobody/no-such-repo"), FakeEmbedder(128))


def test_unreachable_hub_means_local_cache_only_and_one_clear_error(monkeypatch):
    from magicid import profiles

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    probed = []
    monkeypatch.setattr(profiles, "hub_reachable", lambda repo: probed.append(repo) or False)
    with pytest.raises(MissingWeightsError, match="base model.*Hub is unreachable"):
        load_profile(ProfileConfig(name="hub"), embedder=FakeEmbedder(512))
    assert probed == [ProfileConfig().base_model]  # one probe, not one timeout per component


def test_hub_probe_treats_a_transport_failure_as_unreachable(monkeypatch):
    import huggingface_hub

    from magicid.profiles import hub_reachable

    def refuse(self, repo_id, timeout):
        raise ConnectionRefusedError("no route to the Hub")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", refuse)
    assert hub_reachable("some/repo") is False


def test_a_plusv2_weight_file_turns_the_shortcut_on(hub_folders, monkeypatch):
    """FaceID-PlusV2 adds the projected face embedding back to the perceiver output; Plus (v1) does not, and the
    file name tells them apart. (The tiny projection's widths cannot take the shortcut itself, so the loader's
    choice is checked where it is made.)"""
    import dataclasses
    import shutil

    from magicid import profiles

    root, _, _ = hub_folders
    plus_v2 = "ip-adapter-faceid-plusv2_sd15.bin"
    shutil.copy(root / "ipa" / FACEID_PLUS_FILE, root / "ipa" / plus_v2)
    chosen = []
    adopt = profiles.adopt_faceid_plus
    monkeypatch.setattr(profiles, "adopt_faceid_plus", lambda pipe, shortcut: (chosen.append(shortcut), adopt(pipe, False))[1])
    for weight in (plus_v2, FACEID_PLUS_FILE):
        load_profile(dataclasses.replace(hub_config(root), ip_adapter_weight=weight), FakeEmbedder(512))
    assert chosen == [True, False]


@pytest.fixture(scope="module")
def magicid_folder(tmp_path_factory, tiny_components):
    folder = tmp_path_factory.mktemp("magicid-weights")
    pipe = build_tiny_pipeline(tiny_components)
    save_magicid_weights(folder, pipe.controlnet, IDResampler.tiny(id_embeddings_dim=512),
                         {"base_model": "tiny", "image_encoder": "tiny", "face_embedder": "fake"})  # fmt: skip
    return folder


@pytest.mark.parametrize("name", ["tiny", "hub", "magicid"])
def test_every_profile_generates_and_restores_in_bfloat16(name, hub_folders, magicid_folder, capfd):
    """bfloat16 on the CPU takes the code path of float16 on CUDA: every model must move with the pipeline, and
    every tensor fed to them must follow (the hub profile's landmark ControlNet once stayed behind)."""
    import dataclasses

    import numpy as np

    from magicid import diir
    from magicid.config import DIIRConfig
    from magicid.identity import Identity

    configs = {"tiny": ProfileConfig(name="tiny"), "hub": hub_config(hub_folders[0]),
               "magicid": ProfileConfig(name="magicid", magicid_weights=str(magicid_folder))}  # fmt: skip
    pipe, encoder = load_profile(dataclasses.replace(configs[name], dtype="bfloat16"), FakeEmbedder(512))
    modules = [module for module in pipe.components.values() if isinstance(module, torch.nn.Module)]
    modules += [encoder.resampler, encoder.image_encoder]
    assert {module.dtype for module in modules} == {torch.bfloat16}
    assert "should be kept in float32" not in capfd.readouterr().err  # diffusers' empty-list warning is silenced
    assert (pipe.landmark_controlnet is not None) == (name == "hub")
    embedding = np.ones(512, np.float32) / 512**0.5
    person = Identity("A", embedding, [Image.new("RGB", (224, 224), "gray")], Image.new("RGB", (128, 128)))
    tokens = encoder.id_tokens([person])
    assert np.isfinite(run_once(pipe, tokens)).all()
    crops = [Image.new("RGB", (64, 64), (150, 110, 90))]
    restored = diir.restore_crops(pipe, crops, crops, np.ones((1, 64, 64), np.float32), tokens, DIIRConfig(steps=2))
    assert restored[0].size == (64, 64)


def test_ddim_from_a_pndm_scheduler_config_takes_sd15_settings(tmp_path):
    """SD1.5 checkpoints (Realistic Vision included) ship a PNDM scheduler config without DDIM's keys."""
    from diffusers import PNDMScheduler

    from magicid.profiles import _ddim

    PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, skip_prk_steps=True).save_pretrained(
        tmp_path / "scheduler"
    )
    scheduler = _ddim(str(tmp_path), local=True)
    assert (scheduler.config.clip_sample, scheduler.config.set_alpha_to_one, scheduler.config.steps_offset) == (False, False, 1)
    assert scheduler.config.beta_schedule == "scaled_linear"


def test_the_default_profile_is_hub_only_when_its_weights_are_cached_else_the_shipped_mini(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from magicid.config import default_profile_name

    monkeypatch.delenv("MAGICID_PROFILE", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    hub = ProfileConfig(name="hub")
    needed = [(hub.base_model, "unet/config.json"), (hub.openpose_controlnet, "config.json"),
              (hub.ip_adapter_repo, hub.ip_adapter_weight)]  # fmt: skip
    for count, (repo, filename) in enumerate(needed):
        assert default_profile_name() == "mini", f"{count} of {len(needed)} files cached"
        snapshot = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
        (snapshot / filename).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / filename).write_text("{}")
        (snapshot.parent.parent / "refs").mkdir(exist_ok=True)
        (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    assert default_profile_name() == "hub"
    monkeypatch.setenv("MAGICID_PROFILE", "tiny")
    assert default_profile_name() == "tiny"


def test_the_hub_profile_without_arcface_fails_first_in_one_line(tmp_path, monkeypatch):
    """Before any download: the base model here does not even exist."""
    monkeypatch.setenv("MAGICID_INSIGHTFACE_ROOT", str(tmp_path))
    with pytest.raises(MissingWeightsError) as error:
        load_profile(ProfileConfig(name="hub", base_model=str(tmp_path / "nowhere")))
    message = str(error.value)
    assert "buffalo_l" in message and "tiny or magicid profile" in message and "\n" not in message
