"""Behavioural cloning of the early exits on the early-exit policy's own states (DAgger-style, ZTW appendix A.2).

One round: 8 envs (sticky actions p = 0.1) play 128 steps; at every step each env picks one IC uniformly at random
and plays that exit's (argmax) action, while the buffer stores the observation and the **expert's** action
distribution. Then, on that buffer, stage 1 trains the ICs for 5 epochs (batch 64) and stage 2 the ensembles with
the ICs frozen (5 epochs, batch 128); the loss is ``KL(expert ‖ exit)``. Rounds repeat until the step budget is
spent (paper: >= 1 M env steps).

The expert is frozen, so the outputs of the stages the ICs attach to are computed once per step while acting and
cached for the epochs (``EarlyExitModel.attached_stage_outputs``); stage 2 likewise caches the frozen ICs'
log-probabilities. Both give exactly the forward passes of the plain loop, without re-running the backbone.

Checkpoints (heads, ensembles, optimisers, RNG states, step count) are written atomically after every round, so
``kill -9`` loses at most one round and ``resume=True`` continues the step count.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ee_rl.config import CONFIG_DIR, build_dataclass, merged_section, read_yaml
from ee_rl.core import AllExits, concat_all_exits
from ee_rl.core.method import ExitMethod
from ee_rl.devices import resolve_device
from ee_rl.errors import UserError
from ee_rl.io import RunDirLock, atomic_write_bytes, atomic_write_json, ensure_writable_dir
from ee_rl.rl.policy import EarlyExitPolicy, save_exit_heads

DEFAULT_CONFIG = CONFIG_DIR / "exits.yaml"
CHECKPOINT_FORMAT = "ee_rl.exits_checkpoint"
#: Episodes averaged for the summary's recent return.
RECENT_EPISODES = 100


@dataclasses.dataclass
class DistillConfig:
    """Behavioural-cloning settings (ZTW appendix A.2 unless noted).

    ``choose_final_exit``: also let the expert's own head be one of the exits drawn uniformly at each step (the
    paper draws among the ICs only). Learning rates are not given in the paper (Adam is used for both stages).
    """

    total_timesteps: int = 1_000_000
    n_envs: int = 8
    n_steps: int = 128
    n_epochs: int = 5
    ic_batch_size: int = 64
    ensemble_batch_size: int = 128
    ic_learning_rate: float = 1e-3
    ensemble_learning_rate: float = 1e-2
    sticky_prob: float = 0.1
    choose_final_exit: bool = False
    ic_stride: int = 4
    pool_size: int = 4

    def validate(self) -> None:
        """Raise :class:`UserError` for a setting out of range."""
        for name in ("total_timesteps", "n_envs", "n_steps", "n_epochs", "ic_batch_size", "ensemble_batch_size",
                     "ic_stride", "pool_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("ic_learning_rate", "ensemble_learning_rate"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be a positive number, got {getattr(self, name)}")
        if not 0.0 <= self.sticky_prob < 1.0:
            raise UserError(f"sticky_prob must be in [0, 1), got {self.sticky_prob}")

    @property
    def steps_per_round(self) -> int:
        """Env steps collected per round: ``n_envs * n_steps``."""
        return self.n_envs * self.n_steps


def load_distill_config(path: str | Path | None, game_display_name: str | None = None) -> DistillConfig:
    """The ``exits`` section of a YAML config, updated by the section named after the game (e.g. ``Pong``)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    cfg = build_dataclass(DistillConfig, merged_section(read_yaml(path), "exits", game_display_name), str(path))
    cfg.validate()
    return cfg


# --- the maths ------------------------------------------------------------------------------------------------


def kl_to_expert(expert_log_probs: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """``KL(expert ‖ q)`` summed over actions and averaged over the batch (the BC loss).

    ``expert_log_probs``: ``(n, K)``; ``log_probs``: ``(n, K)`` (returns a scalar) or ``(M, n, K)`` (returns ``(M,)``,
    one KL per exit). ``sum_a p(a) (log p(a) - log q(a))`` with ``p`` the expert: the forward KL, which makes every
    exit cover all the expert's likely actions.
    """
    if log_probs.shape[-2:] != expert_log_probs.shape:
        raise ValueError(
            f"log_probs must end in the expert's shape {tuple(expert_log_probs.shape)}, got {tuple(log_probs.shape)}"
        )
    target = expert_log_probs.expand_as(log_probs)
    pointwise = F.kl_div(log_probs, target, reduction="none", log_target=True)  # p * (log p - log q)
    return pointwise.sum(dim=-1).mean(dim=-1)


def agreement_with_expert(expert_log_probs: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """Fraction of samples where the argmax action equals the expert's: ``(M,)`` for ``(M, n, K)`` inputs."""
    return (log_probs.argmax(dim=-1) == expert_log_probs.argmax(dim=-1)).double().mean(dim=-1)


def choose_exits(rng: np.random.Generator, n_envs: int, n_exits: int) -> np.ndarray:
    """One exit per env, uniformly at random among ``0..n_exits-1`` (int64, shape ``(n_envs,)``)."""
    return rng.integers(0, n_exits, size=n_envs, dtype=np.int64)


# --- collecting -----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Rollout:
    """One round of states visited by the early-exit policy, labelled by the expert.

    Attributes:
        obs: ``(N, *obs_shape)`` uint8 observations, step-major (``N = n_steps * n_envs``).
        expert_log_probs: ``(N, K)`` the expert's action log-probabilities: the BC labels.
        features: per IC, the ``(N, ...)`` outputs of the stage it is attached to (the frozen backbone's, cached).
        acting_exit: ``(N,)`` the exit whose action was played (``num_ics`` = the expert's head).
        actions: ``(N,)`` the action chosen (before sticky actions may repeat the previous one).
        exits: what every exit answered on these states before training on them (for on-policy metrics).
        episode_returns: raw scores of the games that ended during the round.
    """

    obs: np.ndarray
    expert_log_probs: torch.Tensor
    features: list[torch.Tensor]
    acting_exit: np.ndarray
    actions: np.ndarray
    exits: AllExits
    episode_returns: list[float]

    def __len__(self) -> int:
        return self.obs.shape[0]


@torch.no_grad()
def collect_rollout(
    policy: EarlyExitPolicy,
    env: Any,
    obs: np.ndarray,
    n_steps: int,
    rng: np.random.Generator,
    *,
    choose_final_exit: bool = False,
) -> tuple[Rollout, np.ndarray]:
    """Play ``n_steps`` steps on the vector env ``env`` from ``obs``; return the rollout and the next observation.

    At every step each env picks an exit uniformly (an IC, or also the expert's head if ``choose_final_exit``) and
    plays that exit's argmax action (the ensemble's answer when the method has ensembles: what the deployed exit
    would answer). The stored label is always the expert's distribution.
    """
    model = policy.model
    n_exits = policy.num_ics + (1 if choose_final_exit else 0)
    obs_list, labels, acting, actions_list, parts, returns = [], [], [], [], [], []
    features: list[list[torch.Tensor]] = [[] for _ in range(policy.num_ics)]
    for _ in range(n_steps):
        x = policy.obs_tensor(obs)
        feats, final_logits = model.attached_stage_outputs(x)
        out = model.exits_from_stage_outputs(feats, final_logits)
        exits = choose_exits(rng, x.shape[0], n_exits)
        rows = torch.arange(x.shape[0])
        actions = out.answer_log_probs[torch.from_numpy(exits), rows].argmax(dim=-1).cpu().numpy().astype(np.int64)
        obs_list.append(obs.copy())
        labels.append(out.final_log_probs)
        for m, f in enumerate(feats):
            features[m].append(f)
        acting.append(exits)
        actions_list.append(actions)
        parts.append(out)
        obs, _, _, infos = env.step(actions)
        returns.extend(float(info["episode"]["r"]) for info in infos if "episode" in info)
    rollout = Rollout(
        obs=np.concatenate(obs_list),
        expert_log_probs=torch.cat(labels),
        features=[torch.cat(f) for f in features],
        acting_exit=np.concatenate(acting),
        actions=np.concatenate(actions_list),
        exits=concat_all_exits(parts),
        episode_returns=returns,
    )
    return rollout, obs


# --- training -------------------------------------------------------------------------------------------------


def _minibatches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


def fit_epochs(
    policy: EarlyExitPolicy,
    n: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    n_epochs: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device | str,
) -> list[float]:
    """The training loop of both stages: ``n_epochs`` passes over ``n`` samples in shuffled minibatches.

    ``batch_loss(idx)`` returns one loss per exit, ``(M,)``, each the mean over the minibatch ``idx`` (indices on
    ``device``); their sum is minimised. Returns each exit's mean loss over the last epoch (minibatches weighted by
    size). The policy is in training mode during the loop and back in eval mode after it.
    """
    policy.train()
    last_epoch: list[torch.Tensor] = []
    for _ in range(n_epochs):
        last_epoch = []
        for idx in _minibatches(n, batch_size, generator):
            idx = idx.to(device)
            per_exit = batch_loss(idx)
            optimizer.zero_grad(set_to_none=True)
            per_exit.sum().backward()
            optimizer.step()
            last_epoch.append(per_exit.detach() * idx.shape[0])
    policy.eval()
    return (torch.stack(last_epoch).sum(dim=0) / n).tolist()


def train_ics(
    policy: EarlyExitPolicy,
    rollout: Rollout,
    optimizer: torch.optim.Optimizer,
    *,
    n_epochs: int,
    batch_size: int,
    generator: torch.Generator,
) -> list[float]:
    """Stage 1: minimise ``sum_m KL(expert ‖ IC m)`` over the rollout; return each IC's mean loss in the last epoch.

    With stop-gradient cascades (ZTW) each IC's loss moves only that IC; without it (ablation) IC m's loss also
    moves ICs ``< m`` through the cascade input. Ensembles are not trained here.
    """
    model = policy.model
    device = policy.device
    labels = rollout.expert_log_probs.to(device)
    features = [f.to(device) for f in rollout.features]

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        out = model.exits_from_stage_outputs([f[idx] for f in features], labels[idx])
        return kl_to_expert(labels[idx], out.ic_log_probs)

    return fit_epochs(
        policy, len(rollout), batch_loss, optimizer, n_epochs=n_epochs, batch_size=batch_size, generator=generator,
        device=device,
    )


@torch.no_grad()
def ic_log_probs_of(policy: EarlyExitPolicy, rollout: Rollout, chunk: int = 1024) -> torch.Tensor:
    """``(M, N, K)`` every IC's log-probs on the rollout, from the cached stage outputs (no gradients)."""
    model = policy.model
    device = policy.device
    out = []
    for start in range(0, len(rollout), chunk):
        feats = [f[start : start + chunk].to(device) for f in rollout.features]
        labels = rollout.expert_log_probs[start : start + chunk].to(device)
        out.append(model.exits_from_stage_outputs(feats, labels).ic_log_probs)
    return torch.cat(out, dim=1)


def train_ensembles(
    policy: EarlyExitPolicy,
    rollout: Rollout,
    optimizer: torch.optim.Optimizer,
    *,
    n_epochs: int,
    batch_size: int,
    generator: torch.Generator,
) -> list[float]:
    """Stage 2: ICs frozen, minimise ``sum_m KL(expert ‖ ensemble m)``; return each ensemble's last-epoch mean loss.

    The frozen ICs' log-probs are computed once for the whole rollout and fed to the ensembles (no IC gets a
    gradient, none is even re-run). Needs a method with ensembles.
    """
    ensembles = policy.model.ensembles
    if ensembles is None:
        raise ValueError(f"method {policy.method.name} has no ensembles to train")
    members = ic_log_probs_of(policy, rollout)  # (M, N, K), no grad
    labels = rollout.expert_log_probs.to(members.device)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        batch = members[:, idx]
        target = labels[idx]
        return torch.stack(
            [kl_to_expert(target, ens(list(batch[: m + 1].unbind(0)))) for m, ens in enumerate(ensembles)]
        )

    return fit_epochs(
        policy, len(rollout), batch_loss, optimizer, n_epochs=n_epochs, batch_size=batch_size, generator=generator,
        device=members.device,
    )


def rollout_metrics(rollout: Rollout) -> dict[str, float]:
    """On-policy metrics of the exits *before* training on the rollout (fresh states: a held-out estimate).

    Per IC m (1-based in the names): ``kl/ic{m}``, ``agreement/ic{m}`` (argmax equals the expert's), and with
    ensembles ``kl/ensemble{m}``, ``agreement/ensemble{m}``; plus ``rollout/exit{m}_fraction`` of steps played by
    each exit.
    """
    exits, labels = rollout.exits, rollout.expert_log_probs
    metrics: dict[str, float] = {}
    groups = [("ic", exits.ic_log_probs)]
    if exits.ensemble_log_probs is not None:
        groups.append(("ensemble", exits.ensemble_log_probs))
    for name, log_probs in groups:
        for m, (kl, agree) in enumerate(
            zip(kl_to_expert(labels, log_probs).tolist(), agreement_with_expert(labels, log_probs).tolist())
        ):
            metrics[f"kl/{name}{m + 1}"] = kl
            metrics[f"agreement/{name}{m + 1}"] = agree
    counts = np.bincount(rollout.acting_exit, minlength=exits.num_ics + 1)
    for m, c in enumerate(counts):
        metrics[f"rollout/exit{m + 1}_fraction"] = float(c) / len(rollout)
    return metrics


# --- the run --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainingState:
    """Everything a checkpoint holds besides the policy."""

    num_timesteps: int = 0
    rounds: int = 0
    wall_time_s: float = 0.0
    recent_returns: list[float] = dataclasses.field(default_factory=list)
    last_metrics: dict[str, float] = dataclasses.field(default_factory=dict)


def make_optimizers(
    policy: EarlyExitPolicy, cfg: DistillConfig
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """Adam for the heads (stage 1) and, if the method has ensembles, Adam for the ensembles (stage 2)."""
    ic_opt = torch.optim.Adam(policy.model.heads.parameters(), lr=cfg.ic_learning_rate)
    ens = policy.model.ensembles
    ens_opt = torch.optim.Adam(ens.parameters(), lr=cfg.ensemble_learning_rate) if ens is not None else None
    return ic_opt, ens_opt


def save_checkpoint(
    path: Path,
    policy: EarlyExitPolicy,
    ic_opt: torch.optim.Optimizer,
    ens_opt: torch.optim.Optimizer | None,
    state: TrainingState,
    cfg: DistillConfig,
    seed: int,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> None:
    """Write a resumable checkpoint atomically."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "policy": policy.heads_payload(),
        "ic_optimizer": ic_opt.state_dict(),
        "ensemble_optimizer": ens_opt.state_dict() if ens_opt is not None else None,
        "state": dataclasses.asdict(state),
        "config": dataclasses.asdict(cfg),
        "seed": seed,
        "numpy_rng": _jsonable_rng_state(rng),
        "torch_generator": generator.get_state(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _jsonable_rng_state(rng: np.random.Generator) -> dict[str, Any]:
    # PCG64 state holds 128-bit ints: keep them as decimal strings (torch's safe loader takes plain types).
    state = rng.bit_generator.state
    return {
        "bit_generator": state["bit_generator"],
        "state": {k: str(v) for k, v in state["state"].items()},
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def _restore_rng(saved: dict[str, Any]) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = {
        "bit_generator": saved["bit_generator"],
        "state": {k: int(v) for k, v in saved["state"].items()},
        "has_uint32": saved["has_uint32"],
        "uinteger": saved["uinteger"],
    }
    return rng


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a foreign or corrupt file is a :class:`UserError`."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for broken files
        raise UserError(f"checkpoint {path} is corrupt or not a torch file: {type(exc).__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not an early-exit training checkpoint (written by train_exits.py)")
    return payload


def _distill_config(config: str | Path | DistillConfig | None, game_display_name: str) -> DistillConfig:
    """A copy of ``config`` if it is one, else the YAML file's settings for the game."""
    if isinstance(config, DistillConfig):
        config = dataclasses.replace(config)
        config.validate()
        return config
    return load_distill_config(config, game_display_name)


def checkpoint_timesteps(path: str | Path) -> int:
    """Env steps a training checkpoint written by :func:`save_checkpoint` has trained (0 when there is none)."""
    path = Path(path)
    return int(load_checkpoint(path)["state"]["num_timesteps"]) if path.is_file() else 0


def default_run_dir(game_display_name: str, method: ExitMethod, seed: int) -> Path:
    """``runs/exits/<Game>_<method>_s<seed>/``."""
    return Path("runs") / "exits" / f"{game_display_name}_{method.name}_s{seed}"


def distill_exits(
    env: str,
    expert_path: str | Path,
    method: ExitMethod,
    out: str | Path | None = None,
    *,
    seed: int = 0,
    total_timesteps: int | None = None,
    resume: bool = False,
    config: str | Path | DistillConfig | None = None,
    device: str = "cpu",
    threads: int | None = 1,
    progress_bar: bool = True,
    make_env: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Train (or resume) early exits on a frozen expert by behavioural cloning; return the run's summary.

    Writes ``<out>/checkpoints/latest.pt`` after every round, TensorBoard logs under ``<out>/tb/`` (per IC and
    ensemble: KL and agreement on fresh states, training losses, episode returns), and at the end
    ``<out>/exits-<method>.pt`` (the heads file: :func:`ee_rl.rl.policy.load_early_exit_agent` reads it with the
    expert) and ``<out>/summary.json``. ``resume`` continues the step count from the checkpoint; the environments
    restart with seeds derived from ``seed`` and the step count. ``threads``: torch intra-op threads (None = all
    cores; the default 1 suits the small batches here, and avoids 10x slow-downs on a busy CPU). ``make_env``
    defaults to :func:`ee_rl.rl.envs.make_atari_env`. ``config`` is a YAML file (default ``configs/exits.yaml``) or
    the :class:`DistillConfig` itself; a resumed run keeps its own settings unless one is given.
    """
    from ee_rl.core.fingerprint import file_sha256
    from ee_rl.rl.checkpoint import load_model, weights_sha256
    from ee_rl.rl.envs import make_atari_env
    from ee_rl.rl.fast_ppo import tune_cpu
    from ee_rl.rl.games import display_name, rom_id

    make_env = make_env or make_atari_env
    device = str(resolve_device(device))
    game = rom_id(env)
    name = display_name(game)
    run_dir = Path(out) if out is not None else default_run_dir(name, method, seed)
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    if resume and not checkpoint.is_file():
        raise UserError(f"nothing to resume: {checkpoint} does not exist (run without --resume to start)")
    if not resume and checkpoint.is_file():
        raise UserError(f"{run_dir} already holds a checkpoint; pass --resume to continue it or choose another --out")

    state = TrainingState()
    saved: dict[str, Any] = {}
    if resume:
        saved = load_checkpoint(checkpoint)
        if saved["policy"].get("game") != game:
            raise UserError(f"{checkpoint} was trained on '{saved['policy'].get('game')}', not '{game}'")
        saved_method = ExitMethod.from_dict(saved["policy"]["method"])
        if saved_method != method:
            raise UserError(f"{checkpoint} trains method {saved_method.name}, not {method.name}; pass the same flags")
        seed = int(saved["seed"])
        cfg = (
            _distill_config(config, name)
            if config is not None  # the run's own settings, unless told otherwise
            else build_dataclass(DistillConfig, saved["config"], f"{checkpoint} settings")
        )
        state = TrainingState(**saved["state"])
    else:
        cfg = _distill_config(config, name)
    if total_timesteps is not None:
        cfg.total_timesteps = total_timesteps
    if resume and cfg.total_timesteps < state.num_timesteps:
        raise UserError(f"{checkpoint} has already trained {state.num_timesteps:,} steps: --total-timesteps "
                        f"{cfg.total_timesteps:,} would end before it started; give at least that many")
    expert = load_model(expert_path, device="cpu", game=game)
    expert_sha = weights_sha256(expert)  # the expert's identity: its weights, whatever zip holds them
    if resume and saved["policy"].get("expert_sha256") not in (expert_sha, file_sha256(expert_path)):
        raise UserError(f"{checkpoint} was trained on a different expert than {expert_path}; pass the same --expert")
    cfg.validate()
    lock = RunDirLock(run_dir)  # one live process per run directory; released when this function returns
    ensure_writable_dir(run_dir / "checkpoints")
    threads = tune_cpu(threads)

    policy = EarlyExitPolicy.from_expert(
        expert.policy, method, game=game, expert_sha256=expert_sha, ic_stride=cfg.ic_stride, pool_size=cfg.pool_size,
        seed=seed,
    ).to(device)
    del expert  # only the staged copy is used: the expert's file and weights are never written
    ic_opt, ens_opt = make_optimizers(policy, cfg)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    if resume:
        policy.load_heads_payload(saved["policy"], str(checkpoint))
        ic_opt.load_state_dict(saved["ic_optimizer"])
        if ens_opt is not None:
            ens_opt.load_state_dict(saved["ensemble_optimizer"])
        rng = _restore_rng(saved["numpy_rng"])
        generator.set_state(saved["torch_generator"])

    vec_env = make_env(game, cfg.n_envs, training=True, sticky_prob=cfg.sticky_prob, seed=seed + state.num_timesteps)
    if vec_env.action_space.n != policy.num_actions:
        vec_env.close()
        raise UserError(f"{name} has {vec_env.action_space.n} actions but the expert has {policy.num_actions}")
    # purge_step drops TensorBoard events a killed run logged after its last checkpoint.
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=state.num_timesteps if resume else None)
    recent = deque(state.recent_returns, maxlen=RECENT_EPISODES)
    session_start = time.time()
    prior_wall = state.wall_time_s
    start_steps = state.num_timesteps
    bar = tqdm(
        total=cfg.total_timesteps, initial=min(state.num_timesteps, cfg.total_timesteps), unit="step",
        disable=not progress_bar, dynamic_ncols=True, desc=f"exits {method.name}",
    )
    try:
        obs = vec_env.reset()
        while state.num_timesteps < cfg.total_timesteps:
            round_start = time.time()
            rollout, obs = collect_rollout(
                policy, vec_env, obs, cfg.n_steps, rng, choose_final_exit=cfg.choose_final_exit
            )
            metrics = rollout_metrics(rollout)
            ic_losses = train_ics(
                policy, rollout, ic_opt, n_epochs=cfg.n_epochs, batch_size=cfg.ic_batch_size, generator=generator
            )
            metrics.update({f"train/ic{m + 1}_kl": v for m, v in enumerate(ic_losses)})
            if ens_opt is not None:
                ens_losses = train_ensembles(
                    policy, rollout, ens_opt, n_epochs=cfg.n_epochs, batch_size=cfg.ensemble_batch_size,
                    generator=generator,
                )
                metrics.update({f"train/ensemble{m + 1}_kl": v for m, v in enumerate(ens_losses)})
            state.num_timesteps += len(rollout)
            state.rounds += 1
            recent.extend(rollout.episode_returns)
            if rollout.episode_returns:
                metrics["rollout/episode_return"] = float(np.mean(rollout.episode_returns))
            metrics["time/steps_per_s"] = len(rollout) / max(time.time() - round_start, 1e-9)
            for tag, value in metrics.items():
                writer.add_scalar(tag, value, state.num_timesteps)
            state.last_metrics = metrics
            state.recent_returns = list(recent)
            state.wall_time_s = round(prior_wall + time.time() - session_start, 1)
            save_checkpoint(checkpoint, policy, ic_opt, ens_opt, state, cfg, seed, rng, generator)
            writer.flush()
            bar.update(len(rollout))
            bar.set_postfix(
                {k.split("/")[1]: f"{v:.2f}" for k, v in metrics.items() if k.startswith("agreement/")}, refresh=False
            )
    finally:
        bar.close()
        writer.close()
        vec_env.close()

    session_steps = state.num_timesteps - start_steps
    session_time = time.time() - session_start
    summary = {
        "game": game,
        "method": method.name,
        "method_config": method.to_dict(),
        "expert": str(expert_path),
        "expert_sha256": expert_sha,
        "timesteps": state.num_timesteps,
        "rounds": state.rounds,
        "seed": seed,
        "wall_time_s": state.wall_time_s,
        "steps_per_s": round(session_steps / session_time, 1) if session_steps else None,
        "torch_threads": threads,
        "config": dataclasses.asdict(cfg),
        "final_round_metrics": state.last_metrics,
        "recent_episode_return_mean": float(np.mean(list(recent))) if recent else None,
        "recent_episodes": len(recent),
    }
    heads_path = run_dir / f"exits-{method.name}.pt"
    save_exit_heads(heads_path, policy, extra={k: summary[k] for k in ("timesteps", "seed", "config", "method")})
    summary["heads"] = str(heads_path)
    atomic_write_json(run_dir / "summary.json", summary)
    lock.release()
    return summary
