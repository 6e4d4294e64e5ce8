"""Eq. 1 and Alg. 1 (MGMICA): the ID attention processor against a plain reference computation."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from magicid.mgmica import (
    IDAttnProcessor,
    id_attention_state_dict,
    install_id_attention,
    load_id_attention_state_dict,
    masks_on_token_grid,
    set_id_scale,
)
from magicid.resampler import IDResampler


B, GRID_H, GRID_W, C, D, HEADS = 2, 4, 6, 16, 12, 2
Q_LEN = GRID_H * GRID_W


@pytest.fixture(scope="module")
def attn() -> Attention:
    torch.manual_seed(0)
    layer = Attention(query_dim=C, cross_attention_dim=D, heads=HEADS, dim_head=C // HEADS, out_bias=True)
    processor = IDAttnProcessor(hidden_size=C, cross_attention_dim=D, num_tokens=(4,), scale=1.0)
    torch.nn.init.normal_(processor.to_k_ip[0].weight)
    torch.nn.init.normal_(processor.to_v_ip[0].weight)
    layer.set_processor(processor)
    return layer.eval()


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(B, Q_LEN, C, generator=generator)
    text = torch.randn(B, 7, D, generator=generator)
    ids = torch.randn(B, 3, 4, D, generator=generator)
    return hidden, text, ids


def plain_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Multi-head softmax(Q K^T / sqrt(d)) V written out, (B, L, C) in and out."""
    def heads(x):
        return x.view(x.shape[0], x.shape[1], HEADS, -1).transpose(1, 2)

    q, k, v = heads(query), heads(key), heads(value)
    weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    return (weights @ v).transpose(1, 2).reshape(query.shape)


def reference(attn, hidden, text, ids, scales, masks=None):
    """Alg. 1: CA_text + sum_i M_i * s_i * CrossAttn(Q, F_id^i), then the layer's output projection."""
    processor = attn.processor
    query = attn.to_q(hidden)
    out = plain_attention(query, attn.to_k(text), attn.to_v(text))
    for i in range(ids.shape[1]):
        id_out = plain_attention(query, processor.to_k_ip[0](ids[:, i]), processor.to_v_ip[0](ids[:, i]))
        mask = 1.0 if masks is None else masks[0, i].reshape(1, Q_LEN, 1)
        out = out + scales[i] * mask * id_out
    return attn.to_out[1](attn.to_out[0](out))


def region_masks() -> torch.Tensor:
    masks = torch.zeros(1, 3, GRID_H, GRID_W)
    masks[0, 0, :, :2] = 1.0
    masks[0, 1, :, 2:4] = 1.0
    masks[0, 2, :2, 4:] = 1.0
    return masks


def run(attn, hidden, text, ids, scale, masks=None):
    attn.processor.scale = [scale]  # what set_id_scale does to every ID processor of a model
    kwargs = {} if masks is None else {"ip_adapter_masks": [masks]}
    with torch.no_grad():
        return attn(hidden, encoder_hidden_states=(text, [ids]), **kwargs)


def test_single_identity_matches_equation_1(attn, inputs):
    hidden, text, ids = inputs
    one = ids[:, :1]
    with torch.no_grad():
        expected = reference(attn, hidden, text, one, [0.7])
    assert torch.allclose(run(attn, hidden, text, one, 0.7), expected, atol=1e-5)


def test_masked_identities_match_algorithm_1(attn, inputs):
    hidden, text, ids = inputs
    masks = region_masks()
    with torch.no_grad():
        expected = reference(attn, hidden, text, ids, [0.5, 1.0, 2.0], masks)
    assert torch.allclose(run(attn, hidden, text, ids, [0.5, 1.0, 2.0], masks), expected, atol=1e-5)


def test_unmasked_identities_are_summed_not_concatenated(attn, inputs):
    hidden, text, ids = inputs
    with torch.no_grad():
        expected = reference(attn, hidden, text, ids, [1.0, 1.0, 1.0])
    assert torch.allclose(run(attn, hidden, text, ids, 1.0), expected, atol=1e-5)


def test_scale_zero_is_exactly_text_only(attn, inputs):
    hidden, text, ids = inputs
    text_only = copy.deepcopy(attn)
    text_only.set_processor(AttnProcessor2_0())
    with torch.no_grad():
        expected = text_only(hidden, encoder_hidden_states=text)
        plain_tensor = attn(hidden, encoder_hidden_states=text)
    assert torch.equal(run(attn, hidden, text, ids, 0.0), expected)
    assert torch.equal(run(attn, hidden, text, ids, [0.0, 0.0, 0.0], region_masks()), expected)
    assert torch.equal(plain_tensor, expected)


def test_changing_one_identity_changes_only_its_region(attn, inputs):
    hidden, text, ids = inputs
    masks = region_masks()
    changed = ids.clone()
    changed[:, 1] = torch.randn_like(changed[:, 1])
    before = run(attn, hidden, text, ids, 1.0, masks)
    after = run(attn, hidden, text, changed, 1.0, masks)
    moved = (after - before).abs().amax(dim=(0, 2)).reshape(GRID_H, GRID_W) > 1e-6
    assert torch.equal(moved, masks[0, 1] > 0)


def test_one_identity_with_full_mask_equals_single_identity_path(attn, inputs):
    hidden, text, ids = inputs
    one = ids[:, :1]
    full = torch.ones(1, 1, GRID_H, GRID_W)
    assert torch.allclose(run(attn, hidden, text, one, 0.8, full), run(attn, hidden, text, one, 0.8), atol=1e-6)


def test_full_resolution_masks_are_averaged_over_each_token_cell(attn, inputs):
    hidden, text, ids = inputs
    fine = region_masks().repeat_interleave(8, dim=-2).repeat_interleave(8, dim=-1)
    fine[0, 0, :3, :5] = 0.0  # sub-cell detail: a bicubic point sample would miss it, an average does not
    on_grid = masks_on_token_grid(fine, Q_LEN)
    assert on_grid.shape == (1, 3, GRID_H, GRID_W)
    assert torch.allclose(on_grid[0, 0, 0, 0], torch.tensor(1 - 15 / 64))
    with torch.no_grad():
        expected = reference(attn, hidden, text, ids, [1.0, 1.0, 1.0], on_grid)
    assert torch.allclose(run(attn, hidden, text, ids, 1.0, fine), expected, atol=1e-5)


def test_equal_small_faces_keep_equal_weight_on_a_coarse_grid():
    """Three faces of the same size at different sub-cell offsets of a 512 canvas, on the 8x8 grid."""
    size, radius = 512, 24
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    centres = [(100, 256), (260, 228), (430, 300)]
    masks = torch.stack([((xs - x) ** 2 + (ys - y) ** 2 < radius**2).float() for x, y in centres])[None]
    weights = masks_on_token_grid(masks, 64).sum(dim=(-2, -1))[0]
    cell_area = (size / 8) ** 2
    assert torch.allclose(weights, masks.sum(dim=(-2, -1))[0] / cell_area)  # each face keeps its whole weight
    assert weights.max() / weights.min() < 1.01


def test_id_contribution_sink_holds_the_id_branch_output_with_gradients(attn, inputs):
    hidden, text, ids = inputs
    masks = region_masks()
    hidden = hidden.clone().requires_grad_(True)
    attn.processor.scale = [[0.5, 1.0, 2.0]]
    attn.processor.contribution_sink = sink = []
    try:
        attn(hidden, encoder_hidden_states=(text, [ids]), ip_adapter_masks=[masks])
    finally:
        attn.processor.contribution_sink = None
    with torch.no_grad():
        query = attn.to_q(hidden)
        processor = attn.processor
        id_part = sum(
            [0.5, 1.0, 2.0][i] * masks[0, i].reshape(1, Q_LEN, 1)
            * plain_attention(query, processor.to_k_ip[0](ids[:, i]), processor.to_v_ip[0](ids[:, i]))
            for i in range(3)
        )  # fmt: skip
        expected = id_part @ attn.to_out[0].weight.T
    assert len(sink) == 1 and torch.allclose(sink[0], expected, atol=1e-5)
    sink[0].pow(2).sum().backward()
    assert processor.to_v_ip[0].weight.grad is not None and processor.to_v_ip[0].weight.grad.abs().sum() > 0
    processor.to_v_ip[0].weight.grad = None


def test_id_kv_projections_start_as_copies_of_the_text_kv(tiny_components):
    model = copy.deepcopy(tiny_components.controlnet)
    install_id_attention(model)
    for name, processor in model.attn_processors.items():
        if isinstance(processor, IDAttnProcessor):
            layer = model.get_submodule(name.removesuffix(".processor"))
            assert torch.equal(processor.to_k_ip[0].weight, layer.to_k.weight)
            assert torch.equal(processor.to_v_ip[0].weight, layer.to_v.weight)


@pytest.fixture(scope="module")
def controlnet(tiny_components):
    model = copy.deepcopy(tiny_components.controlnet)
    torch.manual_seed(0)
    for zero_conv in [*model.controlnet_down_blocks, model.controlnet_mid_block]:  # untrained: all zeros
        torch.nn.init.normal_(zero_conv.weight, std=0.1)
    install_id_attention(model, num_tokens=4)
    return model


def test_install_replaces_only_cross_attention(controlnet):
    processors = controlnet.attn_processors
    assert all(isinstance(p, IDAttnProcessor) == name.endswith("attn2.processor") for name, p in processors.items())
    keys = id_attention_state_dict(controlnet)
    indices = {int(key.split(".")[0]) for key in keys}
    assert indices and all(index % 2 == 1 for index in indices)  # IP-Adapter layout: attn2 at odd indices


def test_state_dict_round_trip(controlnet, tiny_components):
    state = {key: torch.randn_like(value) for key, value in id_attention_state_dict(controlnet).items()}
    other = copy.deepcopy(tiny_components.controlnet)
    install_id_attention(other)
    load_id_attention_state_dict(other, state)
    assert all(torch.equal(state[k], v) for k, v in id_attention_state_dict(other).items())
    with pytest.raises(ValueError, match="missing"):
        load_id_attention_state_dict(other, {})


def test_controlnet_forward_passes_id_tokens_through(controlnet):
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    cond = torch.rand(1, 3, 64, 64, generator=generator)
    text = torch.randn(1, 5, 32, generator=generator)
    ids = torch.randn(1, 1, 4, 32, generator=generator)

    def residuals(states, scale):
        set_id_scale(controlnet, scale)
        with torch.no_grad():
            down, mid = controlnet(sample, 10, states, cond, return_dict=False)
        return torch.cat([r.flatten() for r in down] + [mid.flatten()])

    text_only = residuals(text, 1.0)
    assert torch.equal(residuals((text, [ids]), 0.0), text_only)
    assert not torch.allclose(residuals((text, [ids]), 1.0), text_only, atol=1e-4)


def test_resampler_shapes_and_save_load(tmp_path):
    resampler = IDResampler.tiny(id_embeddings_dim=128)
    face, clip = torch.randn(3, 128), torch.randn(3, 50, 32)
    with torch.no_grad():
        tokens = resampler(face, clip)
    assert tokens.shape == (3, 4, 32)
    resampler.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    with torch.no_grad():
        reloaded = IDResampler.from_pretrained(tmp_path)(face, clip)
    assert torch.equal(reloaded, tokens)
    assert not torch.allclose(tokens[0], tokens[1])


def test_set_id_scale_reaches_every_id_processor(controlnet):
    set_id_scale(controlnet, [0.3, 0.6])
    scales = [p.scale for p in controlnet.attn_processors.values() if isinstance(p, IDAttnProcessor)]
    assert scales and all(scale == [[0.3, 0.6]] for scale in scales)
    set_id_scale(controlnet, 1.0)
    assert all(p.scale == [1.0] for p in controlnet.attn_processors.values() if isinstance(p, IDAttnProcessor))
