"""Behavioural cloning of early exits: the loss, the uniform exit choice, the labels, both stages, resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ee_rl.core.method import exit_method
from ee_rl.errors import UserError
from ee_rl.core.fingerprint import file_sha256
from ee_rl.rl.checkpoint import META_ATTR, load_model, save_model_atomic, weights_sha256
from ee_rl.rl.distill import (
    DistillConfig,
    agreement_with_expert,
    choose_exits,
    collect_rollout,
    distill_exits,
    kl_to_expert,
    load_checkpoint,
    load_distill_config,
    make_optimizers,
    train_ensembles,
    train_ics,
)
from ee_rl.rl.envs import make_atari_env
from ee_rl.rl.expert import ExpertConfig, build_ppo
from ee_rl.rl.policy import EarlyExitPolicy, load_early_exit_agent

TINY = """
exits:
  total_timesteps: 16
  n_envs: 2
  n_steps: 8
  n_epochs: 1
  ic_batch_size: 8
  ensemble_batch_size: 16
"""


@pytest.fixture(scope="module")
def ppo():
    """A fresh PPO expert whose action head is sharpened, so that its distributions are far from uniform."""
    env = make_atari_env("Pong", 1, seed=0, num_threads=1)
    try:
        model = build_ppo(env, ExpertConfig(n_steps=64, batch_size=64), 0, "cpu", None)
    finally:
        env.close()
    with torch.no_grad():
        model.policy.action_net.weight.mul_(300.0)
    setattr(model, META_ATTR, {"game": "pong", "seed": 0})
    return model


@pytest.fixture(scope="module")
def expert_zip(tmp_path_factory, ppo) -> Path:
    return save_model_atomic(ppo, tmp_path_factory.mktemp("agent") / "expert.zip")


@pytest.fixture(scope="module")
def rollout_and_policy(ppo):
    policy = EarlyExitPolicy.from_expert(ppo.policy, exit_method("ztw"), seed=0)
    env = make_atari_env("Pong", 4, seed=0, num_threads=1)
    try:
        rollout, _ = collect_rollout(policy, env, env.reset(), 16, np.random.default_rng(0))
    finally:
        env.close()
    return rollout, policy


def test_kl_is_expert_to_exit_summed_over_actions_and_averaged_over_the_batch() -> None:
    p = torch.tensor([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    q = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]], dtype=torch.float64)
    by_hand = (
        (0.7 * math.log(0.7 / 0.2) + 0.2 * math.log(0.2 / 0.5) + 0.1 * math.log(0.1 / 0.3))
        + (1 / 3) * (math.log((1 / 3) / 0.6) + math.log((1 / 3) / 0.3) + math.log((1 / 3) / 0.1))
    ) / 2
    kl = kl_to_expert(p.log(), q.log())
    assert kl.shape == ()
    assert kl.item() == pytest.approx(by_hand, rel=1e-12)
    assert kl_to_expert(q.log(), p.log()).item() != pytest.approx(by_hand, rel=1e-3)  # the direction matters
    per_exit = kl_to_expert(p.log(), torch.stack([q.log(), p.log()]))
    assert per_exit.shape == (2,)
    assert per_exit[0].item() == pytest.approx(by_hand, rel=1e-12) and per_exit[1].item() == 0.0
    agree = agreement_with_expert(p.log(), torch.stack([q.log(), p.log()]))
    # Row 1: argmax 0 vs 1; row 2: p is a three-way tie (argmax 0) and q's argmax is 0.
    assert agree[0].item() == 0.5 and agree[1].item() == 1.0


def test_exit_choice_is_uniform_per_env() -> None:
    rng = np.random.default_rng(0)
    draws = np.stack([choose_exits(rng, 8, 3) for _ in range(6000)])  # (steps, envs)
    assert draws.dtype == np.int64 and set(np.unique(draws)) == {0, 1, 2}
    counts = np.stack([np.bincount(draws[:, e], minlength=3) for e in range(8)])  # (envs, exits)
    expected = 6000 / 3
    chi2 = ((counts - expected) ** 2 / expected).sum(axis=1)
    # chi-square with 2 degrees of freedom: P(chi2 > 13.8) = 0.001 per env.
    assert (chi2 < 13.8).all(), chi2
    # Envs choose independently: consecutive envs disagree as often as independent uniform draws would.
    assert np.mean(draws[:, 0] != draws[:, 1]) == pytest.approx(2 / 3, abs=0.03)


def test_rollout_stores_the_expert_distribution_and_plays_the_chosen_exit(rollout_and_policy, ppo) -> None:
    rollout, policy = rollout_and_policy
    assert len(rollout) == 64 and rollout.obs.dtype == np.uint8 and rollout.obs.shape == (64, 4, 84, 84)
    with torch.no_grad():
        obs = torch.from_numpy(rollout.obs)
        sb3 = ppo.policy.get_distribution(obs).distribution.logits  # the expert's own log-probabilities
    torch.testing.assert_close(rollout.expert_log_probs, sb3, rtol=0, atol=1e-5)
    everything = policy.all_exits(rollout.obs)
    acting = everything.answer_log_probs[torch.from_numpy(rollout.acting_exit), torch.arange(64)]
    np.testing.assert_array_equal(rollout.actions, acting.argmax(-1).numpy())
    # The labels are not the acting exit's distribution (untrained ICs disagree with the expert).
    assert (rollout.expert_log_probs - acting).abs().amax(dim=1).min() > 0.01
    assert set(rollout.acting_exit.tolist()) == {0, 1}  # ICs only (the paper), both used
    # Cached stage outputs are the backbone's conv1 and conv2 outputs on the stored observations.
    features, final = policy.model.attached_stage_outputs(obs)
    for cached, fresh in zip(rollout.features, features):
        torch.testing.assert_close(cached, fresh, rtol=0, atol=1e-5)


def test_exits_from_cached_stage_outputs_equal_all_exits(rollout_and_policy) -> None:
    rollout, policy = rollout_and_policy
    x = torch.from_numpy(rollout.obs[:5])
    with torch.no_grad():
        direct = policy.model.all_exits(x)
        cached = policy.model.exits_from_stage_outputs(*policy.model.attached_stage_outputs(x))
    for name in ("ic_logits", "ic_log_probs", "ensemble_log_probs", "final_logits", "final_log_probs"):
        assert torch.equal(getattr(direct, name), getattr(cached, name)), name


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stage_one_trains_the_ics_only_and_lowers_their_kl(rollout_and_policy, ppo) -> None:
    rollout, trained = rollout_and_policy
    policy = EarlyExitPolicy.from_expert(ppo.policy, exit_method("ztw"), seed=0)
    backbone, ensembles, heads = _state(policy.model.backbone), _state(policy.model.ensembles), _state(
        policy.model.heads
    )
    ic_opt, _ = make_optimizers(policy, DistillConfig(ic_learning_rate=3e-3))
    before = kl_to_expert(rollout.expert_log_probs, policy.all_exits(rollout.obs).ic_log_probs)
    g = torch.Generator().manual_seed(0)
    losses = train_ics(policy, rollout, ic_opt, n_epochs=5, batch_size=16, generator=g)
    after = kl_to_expert(rollout.expert_log_probs, policy.all_exits(rollout.obs).ic_log_probs)
    assert len(losses) == 2 and (after < 0.5 * before).all(), (before, after)
    assert _same(_state(policy.model.backbone), backbone)
    assert _same(_state(policy.model.ensembles), ensembles)
    assert not _same(_state(policy.model.heads), heads)
    assert not policy.training  # back in eval mode


def test_stage_two_trains_the_ensembles_only_and_lowers_their_kl(rollout_and_policy, ppo) -> None:
    rollout, _ = rollout_and_policy
    policy = EarlyExitPolicy.from_expert(ppo.policy, exit_method("ztw"), seed=0)
    ic_opt, ens_opt = make_optimizers(policy, DistillConfig(ensemble_learning_rate=5e-2))
    g = torch.Generator().manual_seed(0)
    train_ics(policy, rollout, ic_opt, n_epochs=2, batch_size=16, generator=g)
    heads = _state(policy.model.heads)
    before = kl_to_expert(rollout.expert_log_probs, policy.all_exits(rollout.obs).ensemble_log_probs)
    losses = train_ensembles(policy, rollout, ens_opt, n_epochs=5, batch_size=32, generator=g)
    after = kl_to_expert(rollout.expert_log_probs, policy.all_exits(rollout.obs).ensemble_log_probs)
    assert len(losses) == 2 and (after < before).all(), (before, after)
    assert _same(_state(policy.model.heads), heads)
    sdn = EarlyExitPolicy.from_expert(ppo.policy, exit_method("sdn"))
    with pytest.raises(ValueError, match="no ensembles"):
        train_ensembles(sdn, rollout, ens_opt, n_epochs=1, batch_size=8, generator=g)


@pytest.mark.parametrize(("no_stop_gradient", "ic1_moves"), [(False, False), (True, True)])
def test_stop_gradient_flag_decides_whether_ic2_loss_moves_ic1(rollout_and_policy, ppo, no_stop_gradient, ic1_moves):
    rollout, _ = rollout_and_policy
    policy = EarlyExitPolicy.from_expert(ppo.policy, exit_method("ztw", no_stop_gradient=no_stop_gradient), seed=0)
    out = policy.model.exits_from_stage_outputs([f[:8] for f in rollout.features], rollout.expert_log_probs[:8])
    kl_to_expert(rollout.expert_log_probs[:8], out.ic_log_probs[1]).backward()
    grad = policy.model.heads[0].linear.weight.grad
    assert (grad is not None and grad.abs().sum().item() > 0) is ic1_moves


def test_config_file_and_bad_values(tmp_path) -> None:
    cfg = load_distill_config(None, "Pong")
    assert (cfg.n_envs, cfg.n_steps, cfg.n_epochs, cfg.ic_batch_size, cfg.ensemble_batch_size) == (8, 128, 5, 64, 128)
    assert cfg.total_timesteps == 1_000_000 and cfg.sticky_prob == 0.1 and cfg.steps_per_round == 1024
    bad = tmp_path / "bad.yaml"
    bad.write_text("exits:\n  n_epochs: 0\n")
    with pytest.raises(UserError, match="n_epochs must be a positive integer"):
        load_distill_config(bad, "Pong")
    bad.write_text("exits:\n  batch: 3\n")
    with pytest.raises(UserError, match="unknown key"):
        load_distill_config(bad, "Pong")


def test_run_resume_continues_the_step_count_and_never_touches_the_expert(tmp_path, expert_zip) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    sha = file_sha256(expert_zip)
    out = tmp_path / "run"
    method = exit_method("ztw")
    first = distill_exits("Pong", expert_zip, method, out, config=config, progress_bar=False)
    assert first["timesteps"] == 16 and first["rounds"] == 1
    saved = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert saved["state"]["num_timesteps"] == 16
    with pytest.raises(UserError, match="already holds a checkpoint"):
        distill_exits("Pong", expert_zip, method, out, config=config, progress_bar=False)
    with pytest.raises(UserError, match="trains method ztw, not sdn"):
        distill_exits("Pong", expert_zip, exit_method("sdn"), out, resume=True, progress_bar=False)
    second = distill_exits("Pong", expert_zip, method, out, resume=True, total_timesteps=48, progress_bar=False)
    assert second["timesteps"] == 48 and second["rounds"] == 3
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["state"]["num_timesteps"] == 48
    assert file_sha256(expert_zip) == sha
    assert set(second["final_round_metrics"]) >= {"kl/ic1", "agreement/ic2", "kl/ensemble2", "train/ic1_kl"}
    agent = load_early_exit_agent(expert_zip, out / "exits-ztw.pt")
    assert agent.expert_sha256 == weights_sha256(load_model(expert_zip, device="cpu"))  # heads know the weights
    assert torch.load(out / "exits-ztw.pt", weights_only=True)["expert_sha256"] == agent.expert_sha256
    assert list((out / "tb").glob("events.out.tfevents.*"))
    with pytest.raises(UserError, match="nothing to resume"):
        distill_exits("Pong", expert_zip, method, tmp_path / "empty", resume=True, progress_bar=False)
