"""One MMF training step, watched from outside: the condition image per stage, the clone batch, the loss target,
ID dropout, the null-text rate, and where the gradients of `L_cldm` and `L_cfa` go (Eq. 1-4 on the tiny models).

Each test asserts the mechanism itself (what the model is called with, which parameters receive gradients), so
switching the mechanism off fails it; `scripts/mutants.py` checks that they do.
"""

from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace

import pytest
import torch
from test_train_mmf import EMBED_DIM, synthetic_record, tiny_test_config

from train.idzoom import ShardWriter


CPU = SimpleNamespace(device=torch.device("cpu"))  # all `training_step` needs of the accelerator


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, testdata):
    directory = tmp_path_factory.mktemp("idzoom-step")
    photos = [testdata / "portraits" / "barack_obama" / "1.jpg", testdata / "portraits" / "joe_biden" / "1.jpg"]
    with ShardWriter(directory, records_per_shard=10) as writer:
        for index, photo in enumerate(photos):
            writer.write(synthetic_record(photo, index))
    return directory


@pytest.fixture(scope="module")
def parts(data_dir):
    from train.train_mmf import evaluation_batch, load_models

    config = tiny_test_config(id_drop_prob=0.0)
    frozen, model = load_models(config, EMBED_DIM)
    return config, frozen, model, evaluation_batch(config, data_dir, frozen)


class ModelSpy:
    """Calls the model and keeps what it was called with."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, *args):
        self.calls.append(args)
        return self.model(*args)


def run_step(parts, step: int, model=None, seed: int = 0, **overrides) -> tuple[dict, ModelSpy]:
    from train.losses import IDContributionRecorder
    from train.train_mmf import training_step

    config, frozen, trained, batch = parts
    model = model or trained
    config = dataclasses.replace(config, **overrides) if overrides else config
    spy = ModelSpy(model)
    generator = torch.Generator().manual_seed(seed)
    losses = training_step(spy, frozen, dict(batch), step, config, IDContributionRecorder(model.controlnet), CPU,
                           torch.float32, generator)  # fmt: skip
    return losses, spy


def condition_of(spy: ModelSpy) -> torch.Tensor:
    return spy.calls[0][5]


def grads(model, prefix: str) -> list[torch.Tensor]:
    return [p.grad for name, p in model.named_parameters() if prefix in name and p.grad is not None]


def total_grad(model, prefix: str) -> float:
    return float(sum(grad.abs().sum() for grad in grads(model, prefix)))


@pytest.mark.parametrize(("step", "condition"), [(0, "landmarks"), (5, "skeleton")])
def test_each_stage_shows_the_controlnet_its_own_condition(parts, step, condition):
    _, spy = run_step(parts, step)
    assert torch.equal(condition_of(spy), parts[3][condition])


def test_a_clone_step_clones_image_and_pose_and_adds_lambda_l_cfa(parts):
    losses, spy = run_step(parts, 10)
    condition = condition_of(spy)
    half = condition.shape[-1] // 2
    assert torch.equal(condition[..., :half], condition[..., half:])
    assert not torch.equal(condition, parts[3]["skeleton"]) and not torch.equal(condition, parts[3]["landmarks"])
    assert losses["l_cfa"] > 0
    assert torch.allclose(losses["loss"], losses["l_cldm"] + 0.2 * losses["l_cfa"])
    no_clone, _ = run_step(parts, 11)
    assert "l_cfa" not in no_clone


def test_the_loss_target_is_the_added_noise(parts, monkeypatch):
    import train.train_mmf as train_mmf

    frozen = parts[1]
    seen = {}
    add_noise = frozen.noise_scheduler.add_noise
    monkeypatch.setattr(frozen.noise_scheduler, "add_noise", lambda x, noise, t: (seen.update(noise=noise),
                        add_noise(x, noise, t))[1])  # fmt: skip
    loss = train_mmf.diffusion_loss
    monkeypatch.setattr(train_mmf, "diffusion_loss", lambda pred, target: (seen.update(target=target),
                        loss(pred, target))[1])  # fmt: skip
    run_step(parts, 3)
    assert torch.equal(seen["target"], seen["noise"])


def past_the_first_steps(model):
    """A copy whose zero convolutions are no longer zero: at initialisation they block every gradient upstream."""
    model = copy.deepcopy(model)
    torch.manual_seed(0)
    for zero_conv in [*model.controlnet.controlnet_down_blocks, model.controlnet.controlnet_mid_block]:
        torch.nn.init.normal_(zero_conv.weight, std=0.1)
    return model


def test_l_cldm_trains_the_resampler_and_the_id_projections(parts):
    model = past_the_first_steps(parts[2])
    losses, _ = run_step(parts, 3, model=model)
    losses["loss"].backward()
    assert total_grad(model, "resampler.") > 0
    assert total_grad(model, "to_k_ip") > 0 and total_grad(model, "to_v_ip") > 0


def test_l_cfa_alone_reaches_the_id_attention_and_the_resampler(parts):
    model = copy.deepcopy(parts[2])
    losses, _ = run_step(parts, 10, model=model)
    losses["l_cfa"].backward()
    assert total_grad(model, "to_v_ip") > 0 and total_grad(model, "resampler.") > 0


def test_dropped_id_tokens_give_the_text_only_controlnet(parts):
    dropped = past_the_first_steps(parts[2])
    losses, spy = run_step(parts, 3, model=dropped, id_drop_prob=1.0)
    assert not spy.calls[0][6].any()
    losses["loss"].backward()
    assert total_grad(dropped, "resampler.") == 0  # no sample kept its F_id
    noisy, timesteps, text, faces, clip, condition, _ = spy.calls[0]
    with torch.no_grad():
        down, mid = dropped(noisy, timesteps, text, faces, clip, condition, torch.zeros(len(faces), dtype=torch.bool))
        text_only = dropped.controlnet(noisy, timesteps, encoder_hidden_states=text, controlnet_cond=condition,
                                       return_dict=False)  # fmt: skip
    assert torch.equal(mid, text_only[1])
    kept, kept_spy = run_step(parts, 3, id_drop_prob=0.0)
    assert kept_spy.calls[0][6].all()


def train_on_clone_batch(parts, cfa_weight: float, steps: int = 6) -> tuple[float, dict]:
    """Adam on one fixed clone batch (same noise each time) from the same start; L_cfa after, and the weights."""
    model = copy.deepcopy(parts[2])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(steps):
        losses, _ = run_step(parts, 10, model=model, cfa_weight=cfa_weight)
        losses["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        after, _ = run_step(parts, 10, model=model, cfa_weight=cfa_weight)
    return after["l_cfa"].item(), {name: p.detach().clone() for name, p in model.named_parameters()}


def test_lambda_lowers_l_cfa_against_lambda_zero_on_a_fixed_clone_batch(parts):
    with_cfa, weights_with = train_on_clone_batch(parts, 0.2)
    without_cfa, weights_without = train_on_clone_batch(parts, 0.0)
    assert with_cfa < 0.9 * without_cfa
    assert any(not torch.equal(weights_with[name], weights_without[name]) for name in weights_with)


def test_null_text_rate_follows_the_config(parts, data_dir):
    from train.dataset import MMFDataset

    config, frozen, _, _ = parts
    null_ids = frozen.tokenizer("", padding="max_length", max_length=frozen.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt").input_ids[0]  # fmt: skip

    def null_share(probability: float, count: int = 60) -> float:
        dataset = MMFDataset(data_dir, config.resolution, frozen.tokenizer, frozen.feature_extractor,
                             null_text_prob=probability, shuffle_buffer=2)  # fmt: skip
        examples = [example for _, example in zip(range(count), dataset)]
        return sum(torch.equal(example["input_ids"], null_ids) for example in examples) / count

    assert null_share(0.0) == 0.0
    assert 0.3 < null_share(0.5) < 0.7
    assert null_share(1.0) == 1.0


def test_the_layers_mmf_adds_learn_at_the_scaled_rate(parts):
    from train.train_mmf import parameter_groups

    config, _, model, _ = parts
    copied, new = parameter_groups(model, dataclasses.replace(config, learning_rate=1e-4, new_layer_lr_scale=5.0))
    assert copied["lr"] == 1e-4 and new["lr"] == pytest.approx(5e-4)
    names = {id(p): name for name, p in model.named_parameters()}
    new_names = [names[id(p)] for p in new["params"]]
    for part in ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding", "to_k_ip", "resampler"):
        assert any(part in name for name in new_names), part
    assert not any("down_blocks.0.resnets" in names[id(p)] for p in new["params"])  # copied from the UNet
    assert len(copied["params"]) + len(new["params"]) == sum(p.requires_grad for p in model.parameters())
