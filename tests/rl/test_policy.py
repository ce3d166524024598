"""EarlyExitPolicy on a real (freshly initialised) SB3 PPO NatureCNN expert: staging, acting, heads files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ee_rl.core import InternalClassifier, MaxProbExit, PatienceExit
from ee_rl.core.ensemble import AdditiveEnsemble, GeometricEnsemble
from ee_rl.core.method import SDN, exit_method
from ee_rl.errors import UserError
from ee_rl.core.fingerprint import file_sha256
from ee_rl.rl.checkpoint import META_ATTR, load_model, save_model_atomic, weights_sha256
from ee_rl.rl.envs import make_atari_env
from ee_rl.rl.expert import ExpertConfig, build_ppo
from ee_rl.rl.policy import (
    EarlyExitPolicy,
    agent_paths,
    load_early_exit_agent,
    nature_cnn_stages,
    read_agent_heads,
    save_exit_heads,
)

NUM_ACTIONS = 6  # Pong


@pytest.fixture(scope="module")
def env_obs() -> np.ndarray:
    """Real Pong observations (uint8, (6, 4, 84, 84)) after some random play."""
    env = make_atari_env("Pong", 2, seed=0, num_threads=1)
    rng = np.random.default_rng(0)
    frames = [env.reset()]
    for _ in range(60):
        obs, *_ = env.step(rng.integers(0, NUM_ACTIONS, 2))
        frames.append(obs)
    env.close()
    return np.concatenate([frames[20], frames[40], frames[60]])


def make_ppo(fast: bool = True, seed: int = 0):
    env = make_atari_env("Pong", 1, seed=seed, num_threads=1)
    try:
        model = build_ppo(env, ExpertConfig(fast=fast, n_steps=64, batch_size=64), seed, "cpu", None)
    finally:
        env.close()
    setattr(model, META_ATTR, {"game": "pong", "seed": seed})
    return model


@pytest.fixture(scope="module")
def ppo():
    return make_ppo()


@pytest.fixture(scope="module")
def expert_zip(tmp_path_factory, ppo) -> Path:
    return save_model_atomic(ppo, tmp_path_factory.mktemp("agent") / "expert.zip")


def sb3_logits(policy, obs: np.ndarray) -> torch.Tensor:
    """The expert's own action logits, computed the way SB3 does."""
    with torch.no_grad():
        x = torch.from_numpy(obs)
        return policy.action_net(policy.mlp_extractor.forward_actor(policy.extract_features(x)))


@pytest.mark.parametrize("fast", [True, False], ids=["ChannelsLastCnnPolicy", "stock CnnPolicy"])
def test_staged_backbone_is_the_expert_bit_for_bit_and_leaves_it_untouched(fast, env_obs) -> None:
    model = make_ppo(fast=fast)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    backbone = nature_cnn_stages(model.policy)
    assert backbone.num_stages == 3
    with torch.no_grad():
        assert torch.equal(backbone(torch.from_numpy(env_obs)), sb3_logits(model.policy, env_obs))
    # Deep copies: the PPO object's parameters keep their values and stay trainable.
    assert all(p.requires_grad for p in model.policy.parameters())
    assert not any(p.requires_grad for p in backbone.parameters())
    with torch.no_grad():
        for p in backbone.parameters():
            p.add_(1.0)
    assert all(torch.equal(v, before[k]) for k, v in model.policy.state_dict().items())
    policy = EarlyExitPolicy.from_expert(model.policy, exit_method("ztw"))
    np.testing.assert_array_equal(
        policy.expert_action(env_obs), model.predict(env_obs, deterministic=True)[0]
    )


def test_never_exit_acts_exactly_as_the_expert_and_costs_the_backbone(ppo, env_obs) -> None:
    policy = EarlyExitPolicy.from_expert(ppo.policy, exit_method("ztw"), seed=0)
    out = policy.act(env_obs, MaxProbExit(2.0))
    n = env_obs.shape[0]
    np.testing.assert_array_equal(out.actions, ppo.predict(env_obs, deterministic=True)[0])
    assert out.actions.dtype == np.int64 and out.exit_index.dtype == np.int64 and out.flops.dtype == np.int64
    assert out.exit_index.tolist() == [2] * n
    assert out.flops.tolist() == [policy.exit_costs.backbone] * n
    np.testing.assert_allclose(out.cost_fraction, 1.0)
    expected = torch.log_softmax(sb3_logits(ppo.policy, env_obs), dim=-1).numpy()
    np.testing.assert_array_equal(out.log_probs, expected)


def test_always_exit_answers_with_the_first_exit_and_matches_all_exits(ppo, env_obs) -> None:
    policy = EarlyExitPolicy.from_expert(ppo.policy, exit_method("ztw"), seed=0)
    out = policy.act(env_obs, MaxProbExit(0.0))
    everything = policy.all_exits(env_obs)
    assert out.exit_index.tolist() == [0] * env_obs.shape[0]
    assert out.flops.tolist() == [policy.exit_costs.cumulative[0]] * env_obs.shape[0]
    torch.testing.assert_close(torch.from_numpy(out.log_probs), everything.exit_log_probs[0])
    np.testing.assert_array_equal(out.actions, everything.exit_log_probs[0].argmax(-1).numpy())
    # PBEE on the SDN heads is just a rule: it runs on the same policy object.
    sdn = EarlyExitPolicy.from_expert(ppo.policy, exit_method("sdn"), seed=0)
    assert sdn.act(env_obs, PatienceExit(0)).exit_index.tolist() == [0] * env_obs.shape[0]


@pytest.mark.parametrize(
    ("flags", "cascade", "ensemble", "detach", "name"),
    [
        ({}, True, GeometricEnsemble, True, "ztw"),
        ({"cascade_only": True}, True, None, True, "ztw-cascade-only"),
        ({"ensemble_only": True}, False, GeometricEnsemble, True, "ztw-ensemble-only"),
        ({"additive": True}, True, AdditiveEnsemble, True, "ztw-additive"),
        ({"no_stop_gradient": True}, True, GeometricEnsemble, False, "ztw-no-stop-gradient"),
    ],
)
def test_heads_follow_the_paper_and_the_method(ppo, flags, cascade, ensemble, detach, name) -> None:
    method = exit_method("ztw", **flags)
    assert method.name == name
    policy = EarlyExitPolicy.from_expert(ppo.policy, method)
    heads = policy.model.heads
    assert policy.num_ics == 2 and policy.model.attach_after == (0, 1)
    for head, channels in zip(heads, (32, 64)):  # conv1 and conv2 outputs
        assert isinstance(head, InternalClassifier)
        assert head.conv.in_channels == head.conv.out_channels == channels
        assert head.conv.stride == (4, 4) and head.conv.kernel_size == (3, 3)
        assert head.pool.size == 4
        assert head.num_classes == NUM_ACTIONS
        assert head.detach_cascade is detach
    assert heads[0].cascade_in == 0
    assert heads[1].cascade_in == (NUM_ACTIONS if cascade else 0)
    if ensemble is None:
        assert policy.model.ensembles is None
    else:
        assert [type(e) for e in policy.model.ensembles] == [ensemble, ensemble]
    # Final exit = the expert's own action head.
    assert torch.equal(policy.model.backbone.head.weight, ppo.policy.action_net.weight)


def test_sdn_has_independent_heads_and_no_ensembles(ppo) -> None:
    policy = EarlyExitPolicy.from_expert(ppo.policy, exit_method("sdn"))
    assert policy.method == SDN
    assert [h.cascade_in for h in policy.model.heads] == [0, 0]
    assert policy.model.ensembles is None


def test_heads_file_round_trip_reproduces_every_exit(tmp_path, ppo, expert_zip, env_obs) -> None:
    sha = weights_sha256(ppo)
    policy = EarlyExitPolicy.from_expert(ppo.policy, exit_method("ztw"), game="pong", expert_sha256=sha, seed=3)
    with torch.no_grad():
        for e in policy.model.ensembles:
            e.log_w.uniform_(-1.0, 0.5)  # non-initial values, so that loading them is checked
    path = save_exit_heads(tmp_path / "exits-ztw.pt", policy, extra={"timesteps": 123})
    loaded = load_early_exit_agent(expert_zip, path, game="Pong")
    assert loaded.method == policy.method and loaded.game == "pong" and loaded.expert_sha256 == sha
    a, b = policy.all_exits(env_obs), loaded.all_exits(env_obs)
    assert torch.equal(a.ic_log_probs, b.ic_log_probs)
    assert torch.equal(a.ensemble_log_probs, b.ensemble_log_probs)
    assert torch.equal(a.final_logits, b.final_logits)
    assert torch.load(path, weights_only=True)["extra"] == {"timesteps": 123}
    # The core entries plus the agent's own: what publish_exits and the serve loader read without an expert.
    payload = read_agent_heads(path)
    assert (payload["game"], payload["expert_sha256"], payload["num_actions"]) == ("pong", sha, NUM_ACTIONS)
    assert (payload["obs_shape"], payload["ic_stride"], payload["pool_size"]) == ([4, 84, 84], 4, 4)
    assert payload["method"] == policy.method.to_dict() and payload["attach_after"] == [0, 1]


def test_heads_follow_the_experts_weights_not_its_zip(tmp_path, ppo, expert_zip, env_obs) -> None:
    from stable_baselines3 import PPO

    from ee_rl.rl.publish import expert_bytes

    # The same weights re-saved as a plain SB3 zip (another file, other bytes) are the same expert.
    plain = tmp_path / "expert.zip"
    plain.write_bytes(expert_bytes(ppo))
    assert file_sha256(plain) != file_sha256(expert_zip)
    stock = PPO.load(plain, device="cpu")  # what a user without ee_rl's classes gets
    assert type(stock.policy).__module__.startswith("stable_baselines3")
    assert stock.predict(env_obs, deterministic=True)[0].tolist() == ppo.predict(env_obs, deterministic=True)[0].tolist()
    policy = EarlyExitPolicy.from_expert(ppo.policy, exit_method("sdn"), game="pong", expert_sha256=weights_sha256(ppo))
    heads = save_exit_heads(tmp_path / "exits-sdn.pt", policy)
    assert load_early_exit_agent(plain, heads).expert_sha256 == weights_sha256(ppo)
    # Older heads record the hash of the zip they were trained from: still accepted with that zip, and re-keyed.
    legacy = EarlyExitPolicy.from_expert(ppo.policy, exit_method("sdn"), game="pong",
                                         expert_sha256=file_sha256(expert_zip))
    loaded = load_early_exit_agent(expert_zip, save_exit_heads(tmp_path / "legacy.pt", legacy))
    assert loaded.expert_sha256 == weights_sha256(ppo)


def test_rekeyed_heads_survive_a_plain_re_save_of_their_expert(tmp_path, ppo, expert_zip, env_obs) -> None:
    from ee_rl.rl.publish import expert_bytes
    from ee_rl.rl.policy import rekey_heads_file

    legacy = EarlyExitPolicy.from_expert(ppo.policy, exit_method("ztw"), game="pong",
                                         expert_sha256=file_sha256(expert_zip), seed=5)
    heads = save_exit_heads(tmp_path / "exits-ztw.pt", legacy, extra={"timesteps": 7})
    before = read_agent_heads(heads)
    assert rekey_heads_file(heads, expert_zip) == weights_sha256(ppo)
    after = read_agent_heads(heads)
    assert after["expert_sha256"] == weights_sha256(ppo) and after["extra"] == {"timesteps": 7}
    assert all(torch.equal(after["heads"][k], before["heads"][k]) for k in before["heads"])
    resaved = tmp_path / "expert.zip"
    resaved.write_bytes(expert_bytes(ppo))  # new bytes: the old file hash would no longer match
    loaded = load_early_exit_agent(resaved, heads)
    assert torch.equal(loaded.all_exits(env_obs).ic_log_probs, legacy.all_exits(env_obs).ic_log_probs)
    other = save_model_atomic(make_ppo(seed=1), tmp_path / "other.zip")
    with pytest.raises(UserError, match="different expert"):
        rekey_heads_file(heads, other)


def test_heads_against_another_expert_or_game_are_one_line_errors(tmp_path, ppo, expert_zip) -> None:
    policy = EarlyExitPolicy.from_expert(
        ppo.policy, exit_method("sdn"), game="pong", expert_sha256=file_sha256(expert_zip)
    )
    heads = save_exit_heads(tmp_path / "exits-sdn.pt", policy)
    other = save_model_atomic(make_ppo(seed=1), tmp_path / "other.zip")
    with pytest.raises(UserError, match="different expert"):
        load_early_exit_agent(other, heads)
    with pytest.raises(UserError, match="trained on 'pong', not 'breakout'"):
        load_early_exit_agent(expert_zip, heads, game="Breakout")
    breakout = EarlyExitPolicy.from_expert(ppo.policy, exit_method("sdn"), game="breakout")
    with pytest.raises(UserError, match="'breakout', not 'pong'"):
        load_early_exit_agent(expert_zip, save_exit_heads(tmp_path / "b.pt", breakout))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="corrupt"):
        load_early_exit_agent(expert_zip, tmp_path / "junk.pt")
    with pytest.raises(UserError, match="not found"):
        load_early_exit_agent(expert_zip, tmp_path / "missing.pt")
    # Heads of another kind (here: no agent fields, as in a vision heads file) are refused before the expert loads.
    payload = {k: v for k, v in torch.load(heads, weights_only=True).items() if k not in ("game", "num_actions")}
    torch.save(payload, tmp_path / "vision-like.pt")
    with pytest.raises(UserError, match="another kind.*lacks game, num_actions"):
        load_early_exit_agent(expert_zip, tmp_path / "vision-like.pt")
    # Heads of another expert architecture (here: another IC width) are a one-line error, not a traceback.
    wide = torch.load(heads, weights_only=True)
    wide["heads"] = {k: torch.cat([v, v]) if k.endswith("conv.bias") else v for k, v in wide["heads"].items()}
    torch.save(wide, tmp_path / "wide.pt")
    with pytest.raises(UserError, match="does not fit this expert's heads"):
        load_early_exit_agent(expert_zip, tmp_path / "wide.pt")


@pytest.mark.parametrize("method", ["ztw", "sdn"])
def test_shipped_pong_agent_loads(method, env_obs) -> None:
    """The committed ``agents/Pong`` heads files (written before the core heads file) fit the committed expert."""
    root = Path(__file__).resolve().parents[2]
    paths = agent_paths(root / "agents" / "Pong", method)
    policy = load_early_exit_agent(paths.expert, paths.heads, game="Pong")
    assert policy.method.name == method and policy.game == "pong" and policy.num_ics == 2
    assert policy.expert_sha256 == weights_sha256(load_model(paths.expert, device="cpu"))  # the expert's identity
    out = policy.act(env_obs, MaxProbExit(0.0))  # every decision at IC 1: the loaded heads answer
    expected = policy.all_exits(env_obs).exit_log_probs[0]
    np.testing.assert_array_equal(out.actions, expected.argmax(-1).numpy())
    assert out.exit_index.tolist() == [0] * env_obs.shape[0]


def test_agent_paths_follow_the_shipped_layout() -> None:
    paths = agent_paths("agents/Pong", "ztw")
    assert paths.expert == Path("agents/Pong/expert.zip")
    assert paths.heads == Path("agents/Pong/exits-ztw.pt")
    assert agent_paths("agents/Pong", "pbee").heads == Path("agents/Pong/exits-sdn.pt")
    with pytest.raises(UserError, match="must be one of"):
        agent_paths("agents/Pong", "bogus")


def test_bad_observations_are_rejected(ppo, env_obs) -> None:
    policy = EarlyExitPolicy.from_expert(ppo.policy, exit_method("sdn"))
    with pytest.raises(ValueError, match="uint8 of shape"):
        policy.act(env_obs.astype(np.float32), MaxProbExit(0.5))
    with pytest.raises(ValueError, match="uint8 of shape"):
        policy.act(env_obs[:, :3], MaxProbExit(0.5))
    with pytest.raises(ValueError, match="empty batch"):
        policy.act(env_obs[:0], MaxProbExit(0.5))


def test_seed_fixes_the_heads_without_touching_the_global_rng(ppo) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = EarlyExitPolicy.from_expert(ppo.policy, exit_method("sdn"), seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    b = EarlyExitPolicy.from_expert(ppo.policy, exit_method("sdn"), seed=7)
    c = EarlyExitPolicy.from_expert(ppo.policy, exit_method("sdn"), seed=8)
    assert torch.equal(a.model.heads[0].conv.weight, b.model.heads[0].conv.weight)
    assert not torch.equal(a.model.heads[0].conv.weight, c.model.heads[0].conv.weight)


def test_device_follows_the_weights_through_copies_and_conversions(ppo, env_obs) -> None:
    import copy

    policy = EarlyExitPolicy.from_expert(ppo.policy, exit_method("ztw"), seed=0)
    assert policy.device == torch.device("cpu")
    assert not any("probe" in k for k in policy.state_dict())  # not a second registered parameter
    twin = copy.deepcopy(policy)
    assert twin._device_probe is next(twin.model.backbone.parameters())
    twin.to(torch.float64)  # converts in place: the probe sees the new weights
    assert twin._device_probe.dtype == torch.float64
    expert_actions = ppo.predict(env_obs, deterministic=True)[0]
    np.testing.assert_array_equal(policy.act(env_obs, MaxProbExit(2.0)).actions, expert_actions)


def test_heads_are_built_on_the_experts_device() -> None:
    """An expert already on an accelerator (the meta device stands in for CUDA, which CI lacks) is probed on its own
    device and gets its heads and ensembles there; a seed leaves the caller's CPU generator as it was."""
    policy = make_ppo().policy.to("meta")
    state = torch.random.get_rng_state()
    early = EarlyExitPolicy.from_expert(policy, exit_method("ztw"), seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert {p.device.type for p in early.model.parameters()} == {"meta"}
    assert len(early.model.heads) == 2 and len(early.model.ensembles) == 2
