"""ID cross-attention (Eq. 1) and Mask Guided Multi-ID Cross Attention, MGMICA (Alg. 1).

Eq. 1:  CA = CrossAttn(Q, F_text) + s * CrossAttn(Q, F_id), with K/V projections of its own for F_id.
Alg. 1: CA = CrossAttn(Q, F_text) + sum_i M_id^i * s_i * CrossAttn(Q, F_id^i).

diffusers' `IPAdapterAttnProcessor2_0` computes exactly this when given `ip_adapter_masks`: one SDPA per
identity, each masked by its region downsampled to the layer's token grid. `IDAttnProcessor` is a thin subclass
that also (a) treats a plain tensor as "text only, no ID tokens", (b) runs several identities without masks
as Alg. 1 with full masks (the parent would concatenate their tokens into one softmax instead), (c) averages
each mask over the cells of the layer's grid (the parent samples it bicubically at cell centres, which aliases
at coarse grids: at 8x8 three equal faces kept peak values 0.97, 0.12 and 0.23), and (d) on request hands the
ID branch's contribution to the output to a sink (`contribution_sink`, the tensor `L_cfa` is computed on).

Calling convention (diffusers' IP-Adapter one): `encoder_hidden_states=(text (B, L, D), [id (B, N, T, D)])`,
`cross_attention_kwargs={"ip_adapter_masks": [masks (1 or B, N, H, W)]}`.
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0
from torch.nn import functional as F


class IDAttnProcessor(IPAdapterAttnProcessor2_0):
    """Eq. 1 for one identity, Alg. 1 for N; installed on cross-attention (`attn2`) layers only.

    `contribution_sink`: when a list, every call with ID tokens appends the ID branch's part of its output,
    `to_out(sum_i M_id^i * s_i * CrossAttn(Q, F_id^i))` (B, tokens, C): the output minus the text-only output
    of the same layer, so the residual and the output bias cancel.
    """

    contribution_sink: list[torch.Tensor] | None = None

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | tuple | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        scale: float = 1.0,
        ip_adapter_masks: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        text, id_tokens = split_id_tokens(encoder_hidden_states)
        num_queries = _num_queries(hidden_states)
        if not id_tokens:
            ip_adapter_masks = None
        elif ip_adapter_masks is None and self._needs_per_identity_sum(id_tokens):
            ip_adapter_masks = [full_masks(tokens.shape[1], num_queries, tokens) for tokens in id_tokens]
        elif ip_adapter_masks is not None:
            ip_adapter_masks = [masks_on_token_grid(masks, num_queries) for masks in ip_adapter_masks]
        output = super().__call__(attn, hidden_states, (text, id_tokens), attention_mask, temb, scale, ip_adapter_masks)
        if self.contribution_sink is not None and id_tokens:
            text_only = super().__call__(attn, hidden_states, (text, []), attention_mask, temb)
            self.contribution_sink.append(output - text_only)
        return output

    def _needs_per_identity_sum(self, id_tokens: list[torch.Tensor]) -> bool:
        several = any(tokens.ndim == 4 and tokens.shape[1] > 1 for tokens in id_tokens)
        return several or any(isinstance(scale, list) for scale in self.scale)


def split_id_tokens(encoder_hidden_states) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`(text, [id tokens])` from the tuple convention; a plain tensor is text with no ID tokens."""
    if isinstance(encoder_hidden_states, tuple):
        text, id_tokens = encoder_hidden_states
        return text, list(id_tokens or [])
    return encoder_hidden_states, []


def full_masks(num_identities: int, num_queries: int, like: torch.Tensor) -> torch.Tensor:
    """All-ones masks `(1, N, 1, num_queries)`: a 1-row grid passes diffusers' mask downsampling unchanged."""
    return torch.ones(1, num_identities, 1, num_queries, dtype=like.dtype, device=like.device)


def token_grid(mask_size: tuple[int, int], num_queries: int) -> tuple[int, int]:
    """The (h, w) token grid diffusers' mask downsampling uses for a mask of `mask_size` = (H, W)."""
    height, width = mask_size
    rows = int(math.sqrt(num_queries / (width / height)))
    rows = rows + int(num_queries % rows != 0)
    return rows, num_queries // rows


def masks_on_token_grid(masks: torch.Tensor, num_queries: int) -> torch.Tensor:
    """Masks (B|1, N, H, W) averaged over the cells of the layer's (h, w) token grid (area downsampling). diffusers
    then resamples them at the same size, which leaves them unchanged."""
    grid = token_grid(tuple(masks.shape[-2:]), num_queries)
    if tuple(masks.shape[-2:]) == grid:
        return masks
    return F.interpolate(masks.float(), size=grid, mode="area").to(masks.dtype)


def _num_queries(hidden_states: torch.Tensor) -> int:
    return hidden_states.shape[2] * hidden_states.shape[3] if hidden_states.ndim == 4 else hidden_states.shape[1]


def _cross_attention_layers(model: torch.nn.Module) -> dict[str, Attention]:
    """Processor name -> `Attention` module, for every cross-attention (`attn2`) layer of `model`."""
    return {
        name: model.get_submodule(name.removesuffix(".processor"))
        for name in model.attn_processors
        if name.endswith("attn2.processor")
    }


def install_id_attention(model: torch.nn.Module, num_tokens: int = 4, scale: float = 1.0) -> None:
    """Put an `IDAttnProcessor` on every cross-attention layer of `model` (ControlNet or UNet); `attn1` untouched.

    New ID K/V projections start as copies of the layer's text K/V (IP-Adapter's training initialisation), so an
    untrained model already attends to `F_id` meaningfully and the result is deterministic.
    """
    processors = dict(model.attn_processors)
    for name, attn in _cross_attention_layers(model).items():
        processor = IDAttnProcessor(
            hidden_size=attn.to_k.out_features,
            cross_attention_dim=attn.to_k.in_features,
            num_tokens=(num_tokens,),
            scale=scale,
        )
        processor.to_k_ip[0].weight.data.copy_(attn.to_k.weight.data)
        processor.to_v_ip[0].weight.data.copy_(attn.to_v.weight.data)
        processors[name] = processor.to(device=attn.to_k.weight.device, dtype=attn.to_k.weight.dtype)
    model.set_attn_processor(processors)


def adopt_ip_adapter_processors(model: torch.nn.Module) -> None:
    """Replace diffusers' `IPAdapterAttnProcessor2_0`s (from `load_ip_adapter`) by `IDAttnProcessor`s, same weights."""
    processors = dict(model.attn_processors)
    for name, processor in processors.items():
        if isinstance(processor, IPAdapterAttnProcessor2_0) and not isinstance(processor, IDAttnProcessor):
            adopted = IDAttnProcessor(
                processor.hidden_size, processor.cross_attention_dim, processor.num_tokens, processor.scale
            )
            adopted.load_state_dict(processor.state_dict())
            weight = processor.to_k_ip[0].weight
            processors[name] = adopted.to(device=weight.device, dtype=weight.dtype)
    model.set_attn_processor(processors)


def id_processors(model: torch.nn.Module) -> dict[str, IPAdapterAttnProcessor2_0]:
    return {name: p for name, p in model.attn_processors.items() if isinstance(p, IPAdapterAttnProcessor2_0)}


def set_id_scale(model: torch.nn.Module, scale: float | list[float]) -> None:
    """ID strength `s` of Eq. 1 (a float), or one `s_i` per identity (a list), on every ID processor of `model`."""
    for processor in id_processors(model).values():
        processor.scale = [list(scale) if isinstance(scale, (list, tuple)) else float(scale)]


def id_attention_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The ID K/V weights in IP-Adapter's key layout: `"{index}.to_k_ip.weight"`, index into `attn_processors`."""
    state = {}
    for index, processor in enumerate(model.attn_processors.values()):
        if isinstance(processor, IPAdapterAttnProcessor2_0):
            state[f"{index}.to_k_ip.weight"] = processor.to_k_ip[0].weight.detach().clone()
            state[f"{index}.to_v_ip.weight"] = processor.to_v_ip[0].weight.detach().clone()
    return state


def load_id_attention_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load `id_attention_state_dict` output into a model that has ID attention installed (strict on both sides)."""
    expected = id_attention_state_dict(model)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ValueError(f"ID attention weights do not fit this model: missing {missing[:4]}, unexpected {unexpected[:4]}")
    for index, processor in enumerate(model.attn_processors.values()):
        if isinstance(processor, IPAdapterAttnProcessor2_0):
            for kind in ("to_k_ip", "to_v_ip"):
                weight = getattr(processor, kind)[0].weight
                weight.data.copy_(state_dict[f"{index}.{kind}.weight"].to(weight.dtype))
