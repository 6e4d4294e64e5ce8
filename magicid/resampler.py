"""The ID resampler: face embedding (ArcFace 512-d or dlib 128-d) + CLIP-vision features -> `F_id` tokens.

Paper, MMF: "we utilize global (Clip Vision) and local (ArcFace) encoders to extract fine-grained face features.
Then resample these features into face embedding F_id with the dimension of 4 x 768." The architecture is the
FacePerceiverResampler of IP-Adapter-FaceID-PlusV2, which diffusers ships as
`IPAdapterFaceIDPlusImageProjection`; `IDResampler` wraps it so it can be sized from config, saved as
safetensors, and called with explicit inputs instead of the `clip_embeds` attribute the UNet loader uses.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import IPAdapterFaceIDPlusImageProjection
from diffusers.models.modeling_utils import ModelMixin


TINY_SEED = 0


class IDResampler(ModelMixin, ConfigMixin):
    """`F_id = resampler(face embedding, CLIP-vision hidden states)`, shape `(B, num_tokens, cross_attention_dim)`.

    Defaults are IP-Adapter-FaceID-PlusV2 for SD1.5 (ArcFace 512-d, CLIP ViT-H 1280-d, 4 x 768 tokens).
    `shortcut` adds the projected face embedding back to the perceiver output (the "V2" of FaceID-Plus).
    """

    @register_to_config
    def __init__(
        self,
        id_embeddings_dim: int = 512,
        clip_embeddings_dim: int = 1280,
        cross_attention_dim: int = 768,
        embed_dims: int = 768,
        num_tokens: int = 4,
        depth: int = 4,
        dim_head: int = 64,
        heads: int = 12,
        ffn_ratio: float = 4,
        ffproj_ratio: int = 2,
        shortcut: bool = True,
        shortcut_scale: float = 1.0,
    ):
        super().__init__()
        self.projection = IPAdapterFaceIDPlusImageProjection(
            embed_dims=embed_dims,
            output_dims=cross_attention_dim,
            hidden_dims=clip_embeddings_dim,
            id_embeddings_dim=id_embeddings_dim,
            depth=depth,
            dim_head=dim_head,
            heads=heads,
            num_tokens=num_tokens,
            ffn_ratio=ffn_ratio,
            ffproj_ratio=ffproj_ratio,
        )
        self.projection.shortcut = shortcut
        self.projection.shortcut_scale = shortcut_scale

    @classmethod
    def tiny(cls, id_embeddings_dim: int, clip_embeddings_dim: int = 32, cross_attention_dim: int = 32) -> IDResampler:
        """The tiny profile's resampler: miniature, deterministically initialised (seeded)."""
        torch.manual_seed(TINY_SEED)
        return cls(
            id_embeddings_dim=id_embeddings_dim,
            clip_embeddings_dim=clip_embeddings_dim,
            cross_attention_dim=cross_attention_dim,
            embed_dims=32,
            depth=1,
            dim_head=8,
            heads=4,
        ).eval()

    @classmethod
    def from_projection(cls, projection: IPAdapterFaceIDPlusImageProjection) -> IDResampler:
        """Adopt a projection built by diffusers' IP-Adapter loader (hub profile), keeping its weights."""
        first_block = projection.layers[0]
        heads = first_block.attn.heads
        resampler = cls(
            id_embeddings_dim=projection.proj.net[0].proj.in_features,
            clip_embeddings_dim=projection.proj_in.in_features,
            cross_attention_dim=projection.proj_out.out_features,
            embed_dims=projection.embed_dim,
            num_tokens=projection.num_tokens,
            depth=len(projection.layers),
            dim_head=first_block.attn.to_q.out_features // heads,
            heads=heads,
            ffn_ratio=first_block.ff[1].net[0].proj.out_features // projection.embed_dim,
            ffproj_ratio=projection.proj.net[0].proj.out_features // projection.proj.net[0].proj.in_features,
            shortcut=projection.shortcut,
            shortcut_scale=projection.shortcut_scale,
        )
        resampler.projection.load_state_dict(projection.state_dict())
        return resampler.to(device=projection.proj_in.weight.device, dtype=projection.proj_in.weight.dtype)

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    def forward(self, face_embeds: torch.Tensor, clip_embeds: torch.Tensor) -> torch.Tensor:
        """`face_embeds (B, id_dim)`, `clip_embeds (B, S, clip_dim)` -> `F_id (B, num_tokens, cross_attention_dim)`."""
        if face_embeds.shape[0] != clip_embeds.shape[0]:
            raise ValueError(f"batch mismatch: {face_embeds.shape[0]} face embeddings, {clip_embeds.shape[0]} CLIP")
        # diffusers' projection reads CLIP features from an attribute, shaped (B, num_images, S, D)
        self.projection.clip_embeds = clip_embeds.unsqueeze(1).to(self.dtype)
        try:
            return self.projection(face_embeds.to(self.dtype))
        finally:
            self.projection.clip_embeds = None
