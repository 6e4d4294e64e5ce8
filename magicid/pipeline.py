"""The MMF generator at inference: SD1.5 + a ControlNet that also receives the ID tokens `F_id` (Eq. 1, Alg. 1).

The stock `StableDiffusionControlNetPipeline` gives its ControlNet the text embeddings only. `MagicIDPipeline`
routes ID tokens (and per-identity masks for MGMICA) to the model that carries the ID attention:

- `id_mode="controlnet"` (MagicID; the tiny and magicid profiles): `F_id` enters the ControlNet's cross-attention;
- `id_mode="unet"` (the hub profile's IP-Adapter-FaceID-PlusV2 baseline): `F_id` enters the UNet's cross-attention
  and the ControlNet gets text only.

`predict_noise` is the one place that wires ControlNet + UNet + ID tokens + CFG; DIIR reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers import StableDiffusionControlNetPipeline
from diffusers.utils import BaseOutput

from magicid.mgmica import set_id_scale


ID_MODES = ("controlnet", "unet")


@dataclass
class MagicIDPipelineOutput(BaseOutput):
    """`images`: the generated images (PIL list, or an array for `output_type="np"`); `conditions`: the control
    images the ControlNet saw, at the output size."""

    images: list[PIL.Image.Image] | np.ndarray
    conditions: list[PIL.Image.Image]


class MagicIDPipeline(StableDiffusionControlNetPipeline):
    """Prompt + pose/landmark condition + `F_id` of N identities (optionally masked per face region) -> images.

    `landmark_controlnet` (optional): a separate face-landmark ControlNet that DIIR uses instead of `controlnet`
    (the hub profile's). It is a registered component, so `to(device, dtype)` moves it with the rest.
    """

    _optional_components = [*StableDiffusionControlNetPipeline._optional_components, "landmark_controlnet"]

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet,
        controlnet,
        scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker: bool = False,
        id_mode: str = "controlnet",
        landmark_controlnet=None,
    ):
        super().__init__(
            vae, text_encoder, tokenizer, unet, controlnet, scheduler, safety_checker, feature_extractor,
            image_encoder, requires_safety_checker,
        )
        self.register_modules(landmark_controlnet=landmark_controlnet)
        if id_mode not in ID_MODES:
            raise ValueError(f"id_mode must be one of {ID_MODES}, got {id_mode!r}")
        self.register_to_config(id_mode=id_mode)

    @property
    def id_mode(self) -> str:
        return self.config.id_mode

    @property
    def native_side(self) -> int:
        """The image side the UNet was built for (its latent sample size x the VAE's downsampling)."""
        return self.unet.config.sample_size * self.vae_scale_factor

    @property
    def id_model(self) -> torch.nn.Module:
        """The model whose cross-attention receives `F_id`."""
        return self.controlnet if self.id_mode == "controlnet" else self.unet

    def predict_noise(
        self,
        latents: torch.Tensor,
        t: torch.Tensor | int,
        prompt_embeds: torch.Tensor,
        control_image: torch.Tensor,
        id_embeds: torch.Tensor | None = None,
        id_masks: torch.Tensor | None = None,
        id_scale: float | list[float] = 1.0,
        controlnet_conditioning_scale: float = 1.0,
        guidance_scale: float = 1.0,
        cross_attention_kwargs: dict[str, Any] | None = None,
        negative_id_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The (guided) noise prediction for `latents (B, 4, h, w)` at step `t`.

        `prompt_embeds` is `(2B, L, D)` = [negative; positive] when `guidance_scale > 1`, else `(B, L, D)`.
        `control_image` is a prepared tensor (any batch that divides the model batch). `id_embeds` `(N, T, D)`
        or `(B, N, T, D)`; `id_masks` `(N, H, W)` in [0, 1] at any resolution with the image's aspect ratio.
        The unconditional CFG branch gets `negative_id_embeds` (shaped like `id_embeds`), by default zero ID
        tokens, which contribute exactly nothing (zero values).
        The ControlNet is skipped at scale 0, so that output is exactly the UNet's alone.
        """
        do_cfg = guidance_scale > 1.0
        model_input = torch.cat([latents] * 2) if do_cfg else latents
        model_input = self.scheduler.scale_model_input(model_input, t)
        batch = model_input.shape[0]
        text = _text_for_batch(prompt_embeds, latents.shape[0], do_cfg)
        id_states = self._id_encoder_states(text, id_embeds, negative_id_embeds, latents.shape[0], do_cfg)
        id_kwargs = dict(cross_attention_kwargs or {})
        if id_embeds is not None and id_masks is not None:
            id_kwargs["ip_adapter_masks"] = [self._prepare_id_masks(id_masks, text, do_cfg)]
        if id_embeds is not None:
            set_id_scale(self.id_model, id_scale)
        in_controlnet = self.id_mode == "controlnet"

        residuals = {}
        if controlnet_conditioning_scale != 0:
            down, mid = self.controlnet(
                model_input,
                t,
                encoder_hidden_states=id_states if in_controlnet else text,
                controlnet_cond=_repeat_to(control_image.to(model_input.dtype), batch),
                conditioning_scale=controlnet_conditioning_scale,
                guess_mode=False,
                cross_attention_kwargs=id_kwargs if in_controlnet else cross_attention_kwargs,
                return_dict=False,
            )
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        noise_pred = self.unet(
            model_input,
            t,
            encoder_hidden_states=text if in_controlnet else id_states,
            cross_attention_kwargs=cross_attention_kwargs if in_controlnet else id_kwargs,
            return_dict=False,
            **residuals,
        )[0]
        if do_cfg:
            noise_uncond, noise_text = noise_pred.chunk(2)
            noise_pred = noise_uncond + guidance_scale * (noise_text - noise_uncond)
        return noise_pred

    def _id_encoder_states(self, text, id_embeds, negative_id_embeds, batch: int, do_cfg: bool):
        """`(text, [F_id (B', N, T, D)])`, or the text alone when there are no ID tokens."""
        if id_embeds is None:
            return text
        tokens = _id_batch(id_embeds, text, batch)
        if do_cfg:
            negative = torch.zeros_like(tokens) if negative_id_embeds is None else _id_batch(negative_id_embeds, text, batch)
            tokens = torch.cat([negative, tokens])
        return text, [tokens]

    @staticmethod
    def _prepare_id_masks(id_masks: torch.Tensor | np.ndarray, like: torch.Tensor, do_cfg: bool) -> torch.Tensor:
        """`(1 or B', N, H, W)` as diffusers' IP-Adapter masks; per-sample masks are doubled for CFG."""
        masks = torch.as_tensor(id_masks).to(device=like.device, dtype=like.dtype)
        masks = masks.unsqueeze(0) if masks.ndim == 3 else masks
        return torch.cat([masks, masks]) if do_cfg and masks.shape[0] > 1 else masks

    def check_id_inputs(self, id_embeds, id_masks, width: int, height: int) -> None:
        """Shape checks for the ID arguments, raising `ValueError` with what to fix."""
        if width % 8 or height % 8:
            raise ValueError(f"width and height must be multiples of 8, got {width}x{height}")
        if id_embeds is None:
            if id_masks is not None:
                raise ValueError("id_masks were given without id_embeds")
            return
        if id_embeds.ndim not in (3, 4):
            raise ValueError(f"id_embeds must be (N, tokens, dim) or (B, N, tokens, dim), got {tuple(id_embeds.shape)}")
        dim = self.id_model.config.cross_attention_dim
        if id_embeds.shape[-1] != dim:
            raise ValueError(f"id_embeds have width {id_embeds.shape[-1]}, the model's cross-attention has {dim}")
        num_ids = id_embeds.shape[-3]
        if id_masks is not None and (id_masks.ndim != 3 or id_masks.shape[0] != num_ids):
            raise ValueError(f"id_masks must be (N={num_ids}, H, W), got {tuple(id_masks.shape)}")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: PIL.Image.Image | None = None,
        negative_prompt: str | list[str] | None = None,
        id_embeds: torch.Tensor | None = None,
        id_masks: torch.Tensor | np.ndarray | None = None,
        id_scale: float | list[float] = 1.0,
        negative_id_embeds: torch.Tensor | None = None,
        controlnet_conditioning_scale: float = 1.0,
        num_inference_steps: int = 30,
        guidance_scale: float = 5.0,
        width: int | None = None,
        height: int | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        eta: float = 0.0,
        cross_attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable[[Any, int, Any, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> MagicIDPipelineOutput | tuple:
        """Generate images. Defaults are the paper's: DDIM, 30 steps, CFG 5."""
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        if image is None:
            raise ValueError("`image` must be the control image (an OpenPose skeleton or a face-landmark image)")
        if width is None or height is None:
            default_height, default_width = self.control_image_processor.get_default_height_width(image)
            width, height = width or default_width, height or default_height
        id_masks = None if id_masks is None else torch.as_tensor(id_masks)

        # 1. Check inputs
        self.check_inputs(
            prompt, image, None, negative_prompt, prompt_embeds, negative_prompt_embeds,
            controlnet_conditioning_scale=controlnet_conditioning_scale,
            callback_on_step_end_tensor_inputs=tensor_inputs,
        )
        self.check_id_inputs(id_embeds, id_masks, width, height)
        self._guidance_scale = guidance_scale
        self._clip_skip = None
        self._cross_attention_kwargs = cross_attention_kwargs
        self._interrupt = False

        # 2. Define call parameters
        if prompt_embeds is not None:
            batch_size = prompt_embeds.shape[0]
        else:
            batch_size = 1 if isinstance(prompt, str) else len(prompt)
        device = self._execution_device
        num_images = batch_size * num_images_per_prompt

        # 3. Encode the prompt ([negative; positive] for CFG)
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, device, num_images_per_prompt, self.do_classifier_free_guidance, negative_prompt,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
        )
        if self.do_classifier_free_guidance:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])

        # 4. Prepare the control image (the CFG doubling happens in predict_noise)
        control = self.prepare_image(
            image, width, height, num_images, num_images_per_prompt, device, self.controlnet.dtype
        )

        # 5. Timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)

        # 6. Initial latents
        latents = self.prepare_latents(
            num_images, self.unet.config.in_channels, height, width, prompt_embeds.dtype, device, generator, latents
        )

        # 7. Extra step kwargs (eta, generator for DDIM)
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # 8. Denoising loop
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                noise_pred = self.predict_noise(
                    latents, t, prompt_embeds, control, id_embeds, id_masks, id_scale,
                    controlnet_conditioning_scale, guidance_scale, cross_attention_kwargs, negative_id_embeds,
                )
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
                if callback_on_step_end is not None:
                    available = {"latents": latents, "prompt_embeds": prompt_embeds, "image": control}
                    callback_kwargs = {name: available[name] for name in tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = callback_outputs.pop("latents", latents)
                    prompt_embeds = callback_outputs.pop("prompt_embeds", prompt_embeds)
                progress_bar.update()

        # 9. Decode
        if output_type == "latent":
            images = latents
        else:
            decoded = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False, generator=generator)[0]
            images = self.image_processor.postprocess(decoded, output_type=output_type)
        conditions = self.image_processor.numpy_to_pil(self.image_processor.pt_to_numpy(control[:1].float().cpu()))
        self.maybe_free_model_hooks()

        if not return_dict:
            return images, conditions
        return MagicIDPipelineOutput(images=images, conditions=conditions)


def _text_for_batch(prompt_embeds: torch.Tensor, batch: int, do_cfg: bool) -> torch.Tensor:
    """Text embeddings for `batch` latents: `[negative x batch; positive x batch]` under CFG."""
    if not do_cfg:
        return _repeat_to(prompt_embeds, batch)
    negative, positive = prompt_embeds.chunk(2)
    return torch.cat([_repeat_to(negative, batch), _repeat_to(positive, batch)])


def _repeat_to(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat a batch of 1 (or a divisor of `batch`) along dim 0 to `batch` entries."""
    if tensor.shape[0] == batch:
        return tensor
    if batch % tensor.shape[0]:
        raise ValueError(f"cannot broadcast a batch of {tensor.shape[0]} to {batch}")
    return tensor.repeat(batch // tensor.shape[0], *([1] * (tensor.ndim - 1)))


def _id_batch(id_embeds: torch.Tensor, like: torch.Tensor, batch: int) -> torch.Tensor:
    """`(N, T, D)` or `(B, N, T, D)` ID tokens as `(batch, N, T, D)` on `like`'s device and dtype."""
    tokens = id_embeds if id_embeds.ndim == 4 else id_embeds.unsqueeze(0)
    return _repeat_to(tokens.to(device=like.device, dtype=like.dtype), batch)
