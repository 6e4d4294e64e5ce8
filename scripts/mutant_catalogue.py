"""The named mutants of `scripts/mutants.py`: each switches off or corrupts one mechanism of the paper.

A mutant is a text substitution in one file (every `old` must occur exactly once) and the tests that must catch
it. Keep the texts short and specific; when code moves, update the texts (the runner reports them as stale).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    substitutions: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]
    what: str


ENGINE_TESTS = ("tests/test_engine.py", "tests/test_group_e2e.py")
MGMICA_TESTS = ("tests/test_mgmica.py", "tests/test_pipeline.py")
DIIR_TESTS = ("tests/test_diir_restore.py", "tests/test_diir_inversion.py", "tests/test_mgff.py")
TRAIN_TESTS = ("tests/test_train_step.py", "tests/test_train_losses.py", "tests/test_train_mmf.py")
DATA_TESTS = ("tests/test_train_data.py",)
HUB_TESTS = ("tests/test_profiles.py", "tests/test_pipeline.py")


def _m(name: str, path: str, old: str, new: str, tests: tuple[str, ...], what: str) -> Mutant:
    return Mutant(name, path, ((old, new),), tests, what)


MUTANTS: list[Mutant] = [
    # --- group photos in the engine (MGMICA, Alg. 1) ---
    _m("engine_group_without_masks", "magicid/engine.py",
       "masks = conditions.id_masks if len(identities) > 1 else None", "masks = None",
       ENGINE_TESTS, "groups are generated without M_id (MGMICA off)"),
    _m("engine_people_swapped", "magicid/engine.py",
       "id_tokens = encoder.id_tokens(identities)\n", "id_tokens = encoder.id_tokens(identities).flip(0)\n",
       ENGINE_TESTS, "identities' tokens reversed against their face regions"),
    _m("engine_hub_null_tokens_unused", "magicid/engine.py",
       'negative_tokens = encoder.null_tokens(len(identities)) if pipe.id_mode == "unet" else None',
       "negative_tokens = None", ENGINE_TESTS + HUB_TESTS, "hub CFG's unconditional branch without null ID tokens"),
    # --- ID cross-attention (Eq. 1) and MGMICA processors ---
    _m("id_kv_not_from_text_kv", "magicid/mgmica.py",
       "processor.to_k_ip[0].weight.data.copy_(attn.to_k.weight.data)\n", "pass\n",
       MGMICA_TESTS, "ID K/V projections not initialised from the text K/V"),
    _m("mgmica_concatenate_identities", "magicid/mgmica.py",
       "return several or any(", "return False and any(",
       MGMICA_TESTS, "several identities concatenated into one softmax instead of summed (Alg. 1)"),
    _m("pipeline_negative_id_in_both_branches", "magicid/pipeline.py",
       "tokens = torch.cat([negative, tokens])", "tokens = torch.cat([tokens, tokens])",
       MGMICA_TESTS, "CFG's unconditional branch gets the identity too"),
    _m("pipeline_no_cfg", "magicid/pipeline.py",
       "noise_pred = noise_uncond + guidance_scale * (noise_text - noise_uncond)", "noise_pred = noise_text",
       MGMICA_TESTS, "classifier-free guidance ignored"),
    # --- DIIR (Alg. 2) inside restore_crops ---
    _m("diir_no_self_attention_fusion", "magicid/diir.py",
       "fusion = SelfAttentionFusion(latent_mask.to(dtype)) if config.fuse_self_attention else None",
       "fusion = None", DIIR_TESTS, "Alg. 2 line 5 off: no self-attention MGFF"),
    _m("diir_no_latent_fusion", "magicid/diir.py",
       "if fuse_latents and mask is not None:", "if False:",
       DIIR_TESTS, "Alg. 2 line 7 off: no latent MGFF"),
    _m("diir_no_id_tokens", "magicid/diir.py",
       "id_embeds=tokens, id_scale=config.id_scale,", "id_embeds=None, id_scale=config.id_scale,",
       DIIR_TESTS, "faces re-denoised without F_id"),
    _m("diir_first_identity_for_all", "magicid/diir.py",
       "tokens[[job.reference for job in chunk]]", "tokens[[0 for job in chunk]]",
       DIIR_TESTS, "every face restored with the first identity's tokens"),
    Mutant("diir_one_timestep_cache", "magicid/diir.py", (
        ("self.features[(self.timestep, layer)] = output", "self.features[(0, layer)] = output"),
        ("cached = self.features.get((self.timestep, layer))", "cached = self.features.get((0, layer))"),
    ), DIIR_TESTS, "self-attention features fused from one timestep's cache"),
    _m("diir_fusion_mask_whole_crop", "magicid/diir.py",
       "latent_mask = F.interpolate(", "latent_mask = 1 + 0 * F.interpolate(",
       DIIR_TESTS, "the fusion mask is the whole crop instead of M_p"),
    _m("diir_swapped_reference_matching", "magicid/diir.py",
       "chosen = dict(zip(*linear_sum_assignment(-similarity)))", "chosen = dict(zip(*linear_sum_assignment(similarity)))",
       DIIR_TESTS, "faces matched to the least similar references"),
    _m("diir_no_similarity_floor", "magicid/diir.py",
       "if reference is not None and similarity[index, reference] >= floor:", "if reference is not None:",
       DIIR_TESTS, "strangers restored as a reference (no minimum similarity)"),
    _m("diir_references_reused_by_default", "magicid/diir.py",
       "    if config.reuse_references:\n", "    if True:\n",
       DIIR_TESTS, "one reference restores several faces without being asked to"),
    _m("diir_no_colour_match", "magicid/diir.py",
       "new = _match_colour(new, original, mask)", "new = new",
       DIIR_TESTS, "restored crop pasted without colour matching"),
    # --- MGFF (Eq. 5-6) ---
    _m("mgff_no_adain", "magicid/mgff.py",
       "return torch.where(has_mask, adapted, target)", "return target",
       DIIR_TESTS, "Eq. 5 off: no MaskedAdaIN"),
    _m("mgff_blend_ignores_mask", "magicid/mgff.py",
       "mixed = restored * mask + reference * (1 - mask)", "mixed = restored",
       DIIR_TESTS, "Eq. 6 soft border: the mask's weights ignored"),
    # --- training (Eq. 2-4, the schedule, the data stream) ---
    _m("cfa_weight_zero", "train/train_mmf.py",
       'losses["l_cldm"] + config.cfa_weight * losses["l_cfa"]', 'losses["l_cldm"] + 0.0 * losses["l_cfa"]',
       TRAIN_TESTS, "L_cfa multiplied by zero"),
    _m("cfa_on_detached_maps", "train/train_mmf.py",
       "recorder.maps(aspect), regions.m1", "[m.detach() for m in recorder.maps(aspect)], regions.m1",
       TRAIN_TESTS, "L_cfa computed on detached attention maps"),
    _m("id_tokens_detached", "train/train_mmf.py",
       "id_tokens = self.resampler(face_embeds, clip_embeds)", "id_tokens = self.resampler(face_embeds, clip_embeds).detach()",
       TRAIN_TESTS, "ID tokens detached: the resampler never trains"),
    _m("clone_without_pose", "train/train_mmf.py",
       '(batch["pixel_values"], condition), regions = clone_batch(', '(batch["pixel_values"], _pose), regions = clone_batch(',
       TRAIN_TESTS, "clone steps clone the image but not its pose image"),
    _m("null_text_never", "train/dataset.py",
       "rng.random() < self.null_text_prob", "rng.random() < 0.0",
       TRAIN_TESTS + DATA_TESTS, "the null-text rate is 0"),
    _m("stage_condition_ignored", "train/train_mmf.py",
       "condition_images(batch, config.stage_at(step).condition, generator)", 'condition_images(batch, "all", generator)',
       TRAIN_TESTS, "every stage trains on the same condition"),
    _m("loss_target_latents", "train/train_mmf.py",
       "    return noise\n", "    return latents\n",
       TRAIN_TESTS, "the loss target is the latents instead of the noise"),
    _m("learning_rate_zero", "train/train_mmf.py",
       "lr=config.learning_rate,", "lr=0.0 * config.learning_rate,",
       TRAIN_TESTS, "nothing is learned (learning rate 0)"),
    _m("cfa_no_gaussian_window", "train/losses.py",
       "maps[index, :, rows, cols2].float()) * window", "maps[index, :, rows, cols2].float())",
       TRAIN_TESTS, "L_cfa without the Gaussian window G"),
    _m("id_dropout_off", "train/train_mmf.py",
       "id_keep = torch.rand(latents.shape[0], generator=generator) >= config.id_drop_prob",
       "id_keep = torch.rand(latents.shape[0], generator=generator) >= 2.0",
       TRAIN_TESTS, "F_id never dropped: CFG's zero-token branch unseen in training"),
    _m("clone_in_every_stage", "train/configs/__init__.py",
       "return step >= final_stage_start and is_clone_step(step, self.clone_every)",
       "return is_clone_step(step, self.clone_every)",
       TRAIN_TESTS, "Clone Face Tuning in every stage, not only the final one"),
    _m("cfa_on_whole_attention_output", "magicid/mgmica.py",
       "self.contribution_sink.append(output - text_only)", "self.contribution_sink.append(output)",
       TRAIN_TESTS + MGMICA_TESTS, "L_cfa on the whole cross-attention output instead of the ID branch"),
    _m("mgmica_point_sampled_masks", "magicid/mgmica.py",
       "ip_adapter_masks = [masks_on_token_grid(masks, num_queries) for masks in ip_adapter_masks]", "pass",
       MGMICA_TESTS, "M_id point-sampled onto coarse grids (aliasing) instead of area-averaged"),
    # --- IDZoom data filters ---
    _m("idzoom_no_skeleton_filter", "train/build_dataset.py",
       "    check_skeleton(pose)\n", "    pass\n", DATA_TESTS, "IDZoom's skeleton filter off"),
    _m("idzoom_no_landmark_filter", "train/build_dataset.py",
       "    check_landmarks(landmarks, face.box, config)\n", "    pass\n", DATA_TESTS, "IDZoom's landmark filter off"),
    _m("idzoom_no_repeat_filter", "train/build_dataset.py",
       "    check_repeats(fingerprint, kept_hashes or {}, config.duplicate_bits)\n", "    pass\n",
       DATA_TESTS, "IDZoom's repeatability (near-duplicate) filter off"),
    _m("idzoom_min_side_per_source_ignored", "train/build_dataset.py",
       "    min_side = config.min_side_for(source)\n", "    min_side = config.min_side\n",
       DATA_TESTS, "min_side_by_source ignored"),
    _m("landmark_only_records_shown_a_blank_skeleton", "train/dataset.py",
       "return torch.where(has_skeleton, skeleton, landmarks)", "return skeleton",
       DATA_TESTS + TRAIN_TESTS, "landmark-only records get their blank skeleton in the skeleton stage"),
    # --- hub ---
    _m("hub_plusv2_shortcut_off", "magicid/profiles.py",
       'shortcut="v2" in config.ip_adapter_weight.lower()', "shortcut=False",
       HUB_TESTS, "the PlusV2 shortcut forced off"),
]
