"""Group photos end to end on the tiny profile: 3 identities placed by a layout, MGMICA in the ControlNet
(`magicid` path) and in the UNet (`hub` path, diffusers' `ip_adapter_masks`)."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from magicid.engine import MagicID
from magicid.group import group_conditions
from magicid.layout import Layout
from magicid.mgmica import install_id_attention, masks_on_token_grid
from magicid.pipeline import MagicIDPipeline
from magicid.profiles import wake_zero_convolutions


PORTRAITS = ("yang_mi/1.jpg", "sundar_pichai/2.jpg", "jennifer_aniston/2.jpg", "robert_downey_jr/2.jpg")


@pytest.fixture(scope="module")
def engine() -> MagicID:
    return MagicID.from_profile("tiny")


@pytest.fixture(scope="module")
def identities(engine, testdata):
    return [engine.encode_identity([testdata / "portraits" / p], name=p.split("/")[0]) for p in PORTRAITS]


def unet_mode_pipeline(components) -> MagicIDPipeline:
    """The hub profile's arrangement on tiny weights: ID attention in the UNet, a text-only ControlNet."""
    parts = copy.deepcopy(components)
    wake_zero_convolutions(parts.controlnet)
    install_id_attention(parts.unet, num_tokens=4)
    return MagicIDPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        controlnet=parts.controlnet, scheduler=parts.scheduler, feature_extractor=parts.feature_extractor,
        image_encoder=parts.image_encoder, id_mode="unet",
    )  # fmt: skip


@pytest.fixture(scope="module", params=["controlnet", "unet"])
def pipe(request, engine, tiny_components) -> MagicIDPipeline:
    return engine.pipeline if request.param == "controlnet" else unet_mode_pipeline(tiny_components)


def first_step(pipe, conditions, tokens, masks):
    """Final latents of a 1-step run, and the output of the ID model's first cross-attention at that step."""
    layer = next(module for name, module in pipe.id_model.named_modules() if name.endswith("attn2"))
    captured = []
    handle = layer.register_forward_hook(lambda module, args, output: captured.append(output.detach().clone()))
    try:
        latents = pipe(
            prompt="a group photo", image=conditions.control_image, id_embeds=tokens, id_masks=masks,
            num_inference_steps=1, guidance_scale=5.0, width=256, height=256,
            generator=torch.Generator().manual_seed(0), output_type="latent",
        ).images  # fmt: skip
    finally:
        handle.remove()
    return latents, captured[0]


@pytest.fixture(scope="module")
def runs(pipe, engine, identities):
    """One-step runs on a 3-person layout: identities (1, 2, 3), (1, 2, 4), zero masks, and no identities."""
    conditions = group_conditions(Layout.from_template("half-body", 3, 256, 256), 3)
    tokens = engine.identity_encoder.id_tokens(identities)
    return conditions, {
        "abc": first_step(pipe, conditions, tokens[[0, 1, 2]], conditions.id_masks),
        "abd": first_step(pipe, conditions, tokens[[0, 1, 3]], conditions.id_masks),
        "zero_masks": first_step(pipe, conditions, tokens[[0, 1, 2]], torch.zeros_like(conditions.id_masks)),
        "text_only": first_step(pipe, conditions, None, None),
    }


def test_identity_j_changes_features_only_inside_its_face_region(runs):
    """Alg. 1 inside a real run: swapping identity 3's F_id changes the ID model's cross-attention output only
    where M_id^3 (averaged onto the token grid exactly as the processor does) is non-zero, and changes the image."""
    conditions, outputs = runs
    (latents_a, features_a), (latents_b, features_b) = outputs["abc"], outputs["abd"]

    change = (features_a[1] - features_b[1]).abs().sum(dim=-1)  # the conditional half of the CFG batch
    region = masks_on_token_grid(conditions.id_masks[None, 2:3], change.numel()).view(-1)
    assert change[region == 0].max() == 0
    assert change[region > 0.5].min() > 0
    assert (features_a[0] == features_b[0]).all()  # the unconditional half has no identities at all
    assert not torch.equal(latents_a, latents_b)


def test_zero_masks_give_exactly_the_text_only_result(runs):
    _, outputs = runs
    assert torch.equal(outputs["zero_masks"][0], outputs["text_only"][0])
    assert torch.equal(outputs["zero_masks"][1], outputs["text_only"][1])
    assert not torch.equal(outputs["abc"][0], outputs["text_only"][0])


def test_cli_group_photo_with_three_identities_from_a_layout_file(tmp_path, testdata, capsys):
    """The tiny end-to-end run: `layout` writes a 3-person layout, `generate` places 3 identities on it."""
    from magicid.cli import main
    from magicid.pngmeta import read_parameters

    layout_path, out = tmp_path / "three.json", tmp_path / "group.png"
    assert main(["layout", "--template", "half-body", "--people", "3", "--out", str(layout_path)]) == 0
    ids = [arg for p in PORTRAITS[:3] for arg in ("--id", str(testdata / "portraits" / p), "--name", p.split("/")[0])]
    argv = ["generate", "--prompt", "three friends", *ids, "--skeleton", str(layout_path), "--steps", "1",
            "--no-restore", "--out", str(out)]  # fmt: skip
    capsys.readouterr()

    assert main(argv) == 0
    notes = capsys.readouterr().err
    for portrait in PORTRAITS[:3]:
        assert f"note: {portrait.split('/')[0]}: FaceSim" in notes  # the per-identity report
    assert "mean FaceSim" in notes
    parameters = read_parameters(out)
    saved = Layout.from_dict(parameters["layout"])
    assert [person.identity for person in saved.people] == [0, 1, 2]
    assert saved.to_json() == Layout.read(layout_path).assign_identities(3).to_json()
    assert parameters["identities"] == [p.split("/")[0] for p in PORTRAITS[:3]]
    with Image.open(out) as image:
        assert image.size == (512, 512)
