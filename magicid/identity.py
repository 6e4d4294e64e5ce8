"""Identity encoding of user photos: face embedding (local) + CLIP-vision features (global) -> `F_id`.

For each photo: the main face -> the face embedder's vector, and its ArcFace-aligned 224 crop -> CLIP-vision
penultimate hidden states. The identity's embedding is the normalised mean over photos; its `F_id` is the
resampler's output averaged over photos (each photo paired with the mean embedding).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import PIL.Image
import torch

from magicid.errors import MagicIDError
from magicid.imageio import ImageSource, load_image
from magicid.perception import FaceEmbedder, align_face, get_face_embedder, main_face
from magicid.resampler import IDResampler


CLIP_CROP_PX = 224
THUMBNAIL_PX = 128
MAX_PHOTOS = 8


@dataclass
class Identity:
    """One person to put in the picture."""

    name: str
    embedding: np.ndarray  # (embedder dim,) L2-normalised mean over the photos
    clip_images: list[PIL.Image.Image]  # ArcFace-aligned 224 px face crops, one per photo
    thumbnail: PIL.Image.Image
    warnings: list[str] = field(default_factory=list)


class IdentityEncoder:
    """Turns photos into an `Identity` and identities into `F_id` tokens `(N, num_tokens, cross_attention_dim)`."""

    def __init__(
        self,
        resampler: IDResampler,
        image_encoder: torch.nn.Module,
        feature_extractor,
        embedder: FaceEmbedder | None = None,
    ):
        self.resampler = resampler
        self.image_encoder = image_encoder
        self.feature_extractor = feature_extractor
        self._embedder = embedder

    @property
    def embedder(self) -> FaceEmbedder:
        if self._embedder is None:
            self._embedder = get_face_embedder()
        return self._embedder

    def encode(self, photos: Sequence[ImageSource], name: str = "") -> Identity:
        """Detect, embed and crop the main face of every photo; `NoFaceError` names the photo without one."""
        if not photos:
            raise MagicIDError(f"No photo given for {name or 'this identity'}: add at least one face photo")
        if len(photos) > MAX_PHOTOS:
            raise MagicIDError(f"{len(photos)} photos given for {name or 'one identity'}; use at most {MAX_PHOTOS}")
        embeddings, crops, warnings = [], [], []
        for index, photo in enumerate(photos):
            image = load_image(photo)
            label = image.info.get("source") or f"photo {index + 1}"
            face, face_warnings = main_face(image, name=label)
            warnings += face_warnings
            embeddings.append(self.embedder.embed(image, face))
            crops.append(align_face(image, face, size=CLIP_CROP_PX))
        mean = np.mean(embeddings, axis=0)
        thumbnail = crops[0].resize((THUMBNAIL_PX, THUMBNAIL_PX), PIL.Image.LANCZOS)
        return Identity(
            name=name,
            embedding=(mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32),
            clip_images=crops,
            thumbnail=thumbnail,
            warnings=warnings,
        )

    @torch.no_grad()
    def clip_features(self, images: list[PIL.Image.Image]) -> torch.Tensor:
        """CLIP-vision penultimate hidden states `(len(images), S, hidden)`, as IP-Adapter-Plus uses them."""
        pixels = self.feature_extractor(images=images, return_tensors="pt").pixel_values
        pixels = pixels.to(device=self.image_encoder.device, dtype=self.image_encoder.dtype)
        return self.image_encoder(pixels, output_hidden_states=True).hidden_states[-2]

    def null_tokens(self, num_identities: int) -> torch.Tensor:
        """IP-Adapter-FaceID-Plus's unconditional tokens `(N, num_tokens, dim)`: the resampler applied to a zero face
        embedding and the CLIP features of an all-zero (normalised) image, as the adapter saw when trained with
        dropped images; the `hub` profile's CFG branch needs them to match that training."""
        return self._null_token.expand(num_identities, -1, -1)

    @functools.cached_property
    @torch.no_grad()
    def _null_token(self) -> torch.Tensor:
        size = self.image_encoder.config.image_size
        pixels = torch.zeros(1, 3, size, size, device=self.image_encoder.device, dtype=self.image_encoder.dtype)
        clip = self.image_encoder(pixels, output_hidden_states=True).hidden_states[-2].to(self.resampler.dtype)
        face = torch.zeros(1, self.resampler.config.id_embeddings_dim, device=clip.device, dtype=clip.dtype)
        return self.resampler(face, clip)

    @torch.no_grad()
    def id_tokens(self, identities: list[Identity]) -> torch.Tensor:
        """`F_id` for each identity, stacked: `(N, num_tokens, cross_attention_dim)`."""
        expected = self.resampler.config.id_embeddings_dim
        tokens = []
        for identity in identities:
            if identity.embedding.shape[-1] != expected:
                raise MagicIDError(
                    f"{identity.name or 'An identity'} was encoded with a {identity.embedding.shape[-1]}-d face "
                    f"embedder but this model expects {expected}-d: encode the photos again with this profile"
                )
            clip = self.clip_features(identity.clip_images)
            face = torch.from_numpy(identity.embedding).to(device=clip.device).expand(clip.shape[0], -1)
            tokens.append(self.resampler(face, clip.to(self.resampler.dtype)).mean(dim=0))
        return torch.stack(tokens)
