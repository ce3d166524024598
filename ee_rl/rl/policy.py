"""Early-exit policies on a frozen SB3 PPO expert (NatureCNN): staging, acting, saving and loading the heads.

The expert's NatureCNN is cut into three stages (ZTW appendix A.2)::

    uint8 (n, 4, 84, 84) -> /255 -> [conv1, ReLU] -> [conv2, ReLU] -> [conv3, ReLU, flatten, linear 512, ReLU]
                                          |IC 1           |IC 2                                    -> action_net

and internal classifiers (conv 3x3 stride 4 keeping the channel count, SDN pool 4x4, linear to the action logits)
are attached after stages 1 and 2. The last exit is the expert's own ``action_net``, so with no early exit the
agent *is* the expert (bit for bit). Everything early-exit (heads, ensembles, rules, batch-shrinking inference,
FLOPs) comes from :mod:`ee_rl.core`; this module only wires an SB3 policy into it.

A trained agent ships as two files: the expert's SB3 zip and one ``exits-<method>.pt`` holding the heads, the
ensembles, the method and a SHA-256 of the expert they were trained on (see :func:`save_exit_heads`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticCnnPolicy
from stable_baselines3.common.torch_layers import NatureCNN
from torch import nn

from ee_rl.core import (
    AllExits,
    EarlyExitModel,
    ExitCosts,
    ExitRule,
    StagedBackbone,
    UInt8ToUnitFloat,
)
from ee_rl.core.builder import build_early_exit_model
from ee_rl.core.heads_file import heads_payload, load_heads_state, read_heads_file, write_heads_file
from ee_rl.core.method import METHODS, ZTW, ExitMethod, exit_method, method_by_name
from ee_rl.errors import UserError
from ee_rl.rl.fast_ppo import ChannelsLastNatureCNN, scale_pixels_channels_last

#: Methods an agent can be run with: those with a heads file of their own (:data:`ee_rl.core.method.METHODS`) and
#: ``pbee`` (the SDN heads + the patience rule).
AGENT_METHODS = (*METHODS, "pbee")
#: What an agent's heads file records beyond the core entries (see :meth:`EarlyExitPolicy.heads_payload`).
AGENT_HEADS_FIELDS = ("game", "expert_sha256", "num_actions", "obs_shape", "ic_stride", "pool_size", "extra")
#: Stage indices the ICs attach after: conv1 and conv2 (ZTW appendix A.2).
NATURE_CNN_ATTACH_AFTER = (0, 1)
#: Atari observations: 4 stacked 84x84 grayscale frames.
ATARI_OBS_SHAPE = (4, 84, 84)


class ScalePixelsChannelsLast(nn.Module):
    """Pixels in [0, 255] -> float32 in [0, 1] laid out channels_last: the fast expert's own preprocessing.

    Values are bit-identical to :class:`ee_rl.core.UInt8ToUnitFloat` (both divide by 255); only the memory
    layout differs, which keeps the staged convolutions exactly those the fast expert runs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x / 255`` as float32, channels_last (a new tensor)."""
        return scale_pixels_channels_last(x)

    def onnx_equivalent(self) -> nn.Module:
        """The same values with ops an ONNX exporter can trace (ONNX graphs have no memory layout to keep)."""
        return UInt8ToUnitFloat()

    def foldable_scale(self) -> tuple[float, nn.Module]:
        """A pure scaling by 1 / 255, as :meth:`UInt8ToUnitFloat.foldable_scale`."""
        return UInt8ToUnitFloat().foldable_scale()


# --- staging the expert ---------------------------------------------------------------------------------------


def _stages_from_nature_cnn(cnn: NatureCNN, policy_net: nn.Module | None) -> list[nn.Module]:
    c = cnn.cnn  # Conv, ReLU, Conv, ReLU, Conv, ReLU, Flatten
    if len(c) != 7 or not all(isinstance(c[i], nn.Conv2d) for i in (0, 2, 4)):
        raise UserError(
            "the expert's feature extractor is not SB3's NatureCNN (conv, ReLU x3, flatten); only NatureCNN "
            "experts (CnnPolicy) can be staged"
        )
    last = [c[4], c[5], c[6], cnn.linear]
    if policy_net is not None and len(list(policy_net.children())) > 0:
        last.append(policy_net)  # net_arch layers between the features and action_net (none in CnnPolicy)
    return [nn.Sequential(c[0], c[1]), nn.Sequential(c[2], c[3]), nn.Sequential(*last)]


def nature_cnn_stages(policy: ActorCriticCnnPolicy) -> StagedBackbone:
    """The expert's actor as a frozen :class:`StagedBackbone` of 3 stages with its own ``action_net`` as the head.

    Stages: [conv1+ReLU], [conv2+ReLU], [conv3+ReLU+flatten+linear+ReLU (+ any actor MLP)]; preprocess: pixels / 255
    (channels_last for :class:`ee_rl.rl.fast_ppo.ChannelsLastCnnPolicy` experts, as they run it). Works for stock
    SB3 ``CnnPolicy`` and ee_rl's ``ChannelsLastCnnPolicy``. The modules are deep copies: the PPO object's own
    parameters are left untouched (not even their ``requires_grad``). ``backbone(x)`` equals the expert's action
    logits bit for bit.
    """
    if not isinstance(policy, ActorCriticCnnPolicy):
        raise UserError(f"the expert must be an SB3 ActorCriticCnnPolicy (PPO CnnPolicy), got {type(policy).__name__}")
    if not isinstance(policy.action_space, spaces.Discrete):
        raise UserError(f"early exits need a discrete action space, the expert has {policy.action_space}")
    cnn = policy.pi_features_extractor
    if not isinstance(cnn, NatureCNN):
        raise UserError(f"the expert's feature extractor must be NatureCNN, got {type(cnn).__name__}")
    if isinstance(cnn, ChannelsLastNatureCNN):
        preprocess: nn.Module = ScalePixelsChannelsLast()
    elif policy.normalize_images:
        preprocess = UInt8ToUnitFloat()
    else:
        raise UserError("the expert does not scale its pixels (normalize_images=False): cannot stage it")
    cnn = copy.deepcopy(cnn)
    policy_net = copy.deepcopy(policy.mlp_extractor.policy_net)
    action_net = copy.deepcopy(policy.action_net)
    return StagedBackbone(_stages_from_nature_cnn(cnn, policy_net), action_net, preprocess=preprocess)


def build_nature_cnn_early_exit(
    num_actions: int = 6, ensembles: bool = False, seed: int = 0, channels_last: bool = False
) -> tuple[EarlyExitModel, nn.Module]:
    """A random-weight SB3 NatureCNN + ``Linear(512, num_actions)`` as a ZTW early-exit model (for benchmarks).

    Same staging as :func:`nature_cnn_stages`, ICs after stages 1 and 2 (IC 2 cascaded on IC 1), geometric
    ensembles if ``ensembles``. Returns the early-exit model and the original (unstaged) network
    ``x -> action_net(cnn(x / 255))``; latency and FLOPs do not depend on the weights. ``channels_last`` lays both
    out as the trained experts run (:class:`ee_rl.rl.fast_ppo.ChannelsLastCnnPolicy`): weights channels_last and
    the pixels scaled straight into channels_last (:class:`ScalePixelsChannelsLast`).
    """
    torch.manual_seed(seed)
    space = spaces.Box(0, 255, ATARI_OBS_SHAPE, dtype="uint8")
    cnn = NatureCNN(space, features_dim=512)
    action_net = nn.Linear(512, num_actions)
    scale: type[nn.Module] = ScalePixelsChannelsLast if channels_last else UInt8ToUnitFloat
    backbone = StagedBackbone(_stages_from_nature_cnn(cnn, None), action_net, preprocess=scale())
    model = build_early_exit_model(
        backbone,
        ZTW if ensembles else exit_method("ztw", cascade_only=True),
        num_classes=num_actions,
        attach_after=NATURE_CNN_ATTACH_AFTER,
        sample=torch.zeros((1, *ATARI_OBS_SHAPE), dtype=torch.uint8),
        stride=4,
        pool_size=4,
    ).eval()
    original = nn.Sequential(scale(), cnn, action_net).eval()
    if channels_last:
        # oneDNN convolutions run in NHWC; keeping weights there avoids reorders on every call.
        model = model.to(memory_format=torch.channels_last)
        original = original.to(memory_format=torch.channels_last)
    return model, original


# --- the policy -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ActResult:
    """One batched decision of an :class:`EarlyExitPolicy`.

    Attributes:
        actions: ``(n,)`` int64, the argmax action of the exit that answered.
        exit_index: ``(n,)`` int64, 0-based exit (``num_ics`` = the expert's own head).
        flops: ``(n,)`` int64, FLOPs really spent on each sample (see :mod:`ee_rl.core.flops`).
        log_probs: ``(n, K)`` float32, that exit's action log-probabilities.
        backbone_flops: FLOPs of one plain expert decision (the 100 % reference).
    """

    actions: np.ndarray
    exit_index: np.ndarray
    flops: np.ndarray
    log_probs: np.ndarray
    backbone_flops: int

    @property
    def cost_fraction(self) -> np.ndarray:
        """``(n,)`` each decision's FLOPs as a fraction of the plain expert's."""
        return self.flops / self.backbone_flops


class EarlyExitPolicy(nn.Module):
    """A frozen PPO expert with internal classifiers: acts with early exits, reports what it computed.

    Args:
        model: the core :class:`EarlyExitModel` (backbone from :func:`nature_cnn_stages`).
        method: how the heads are wired (:class:`ExitMethod`).
        game: ALE ROM id the expert plays (e.g. ``pong``), or None if unknown.
        expert_sha256: hash of the expert's zip the heads belong to, or None.
        ic_stride, pool_size: IC architecture (kept for saving).
        obs_shape: per-sample observation shape.
    """

    def __init__(
        self,
        model: EarlyExitModel,
        method: ExitMethod,
        *,
        game: str | None = None,
        expert_sha256: str | None = None,
        ic_stride: int = 4,
        pool_size: int = 4,
        obs_shape: tuple[int, ...] = ATARI_OBS_SHAPE,
    ) -> None:
        super().__init__()
        self.model = model
        self.method = method
        self.game = game
        self.expert_sha256 = expert_sha256
        self.ic_stride = ic_stride
        self.pool_size = pool_size
        self.obs_shape = tuple(obs_shape)
        self.num_actions = int(model.heads[0].num_classes)
        # One of the expert's parameters, kept outside nn.Module's registry (no second state_dict entry): .to()
        # moves it in place, so its device is always the policy's, read in O(1) on every decision.
        self.__dict__["_device_probe"] = next(model.backbone.parameters())
        # What answers act(): the torch model itself, or an ONNX Runtime runner of it (see use_runtime).
        self.__dict__["_runner"] = model

    @classmethod
    def from_expert(
        cls,
        policy: ActorCriticCnnPolicy,
        method: ExitMethod,
        *,
        game: str | None = None,
        expert_sha256: str | None = None,
        ic_stride: int = 4,
        pool_size: int = 4,
        seed: int | None = None,
    ) -> EarlyExitPolicy:
        """Fresh (untrained) ICs after conv1 and conv2 of the expert ``policy`` (an SB3 CnnPolicy).

        ``seed`` fixes the heads' initialisation (without touching the global torch RNG); None draws from it.
        """
        backbone = nature_cnn_stages(policy)
        obs_shape = tuple(policy.observation_space.shape)
        model = build_early_exit_model(
            backbone,
            method,
            num_classes=int(policy.action_space.n),
            attach_after=NATURE_CNN_ATTACH_AFTER,
            sample=torch.zeros((1, *obs_shape), dtype=torch.uint8),  # moved to the expert's device to size the ICs
            stride=ic_stride,
            pool_size=pool_size,
            seed=seed,
        )
        return cls(
            model, method, game=game, expert_sha256=expert_sha256, ic_stride=ic_stride, pool_size=pool_size,
            obs_shape=obs_shape,
        ).eval()

    # --- properties ---

    @property
    def num_ics(self) -> int:
        """M, the number of internal classifiers; exit index M is the expert's own head."""
        return self.model.num_ics

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return self._device_probe.device

    @property
    def exit_costs(self) -> ExitCosts:
        """FLOPs of every part and of answering at each exit, for one observation."""
        return self.model.exit_costs(torch.zeros((1, *self.obs_shape), dtype=torch.uint8, device=self.device))

    @property
    def runtime(self) -> str:
        """``torch`` or ``onnx``: what answers :meth:`act` (see :meth:`use_runtime`)."""
        return getattr(self._runner, "runtime", "torch")

    def use_runtime(
        self, runtime: str, *, threads: int = 1, cache_dir: str | Path | None = None
    ) -> EarlyExitPolicy:
        """Answer :meth:`act` with ``runtime`` from now on: ``torch`` (the model itself) or ``onnx`` (ONNX Runtime
        segments of the model, exported on first use into ``cache_dir``, see :func:`ee_rl.core.runtime.make_runner`,
        with ``threads`` intra-op threads). The weights must not change afterwards. Returns ``self``."""
        from ee_rl.core.runtime import make_runner

        if runtime == "onnx" and self.device.type != "cpu":
            raise UserError(f"--runtime onnx runs on the CPU; the policy is on {self.device}: use --device cpu")
        sample = torch.zeros((1, *self.obs_shape), dtype=torch.uint8)
        self.__dict__["_runner"] = make_runner(self.model, runtime, sample=sample, threads=threads,
                                               cache_dir=cache_dir)
        self.__dict__["_runtime_cache_dir"] = cache_dir
        return self

    def set_runtime_threads(self, threads: int) -> None:
        """Run the current runtime with ``threads`` intra-op threads (ONNX Runtime: new sessions of the cached
        graphs; torch: its threads are process-wide, set with ``torch.set_num_threads``)."""
        if self.runtime != "torch":
            self.use_runtime(self.runtime, threads=threads, cache_dir=self.__dict__.get("_runtime_cache_dir"))

    def trainable_modules(self) -> nn.ModuleDict:
        """The heads (and ensembles): everything that is not the frozen expert."""
        parts = {"heads": self.model.heads}
        if self.model.ensembles is not None:
            parts["ensembles"] = self.model.ensembles
        return nn.ModuleDict(parts)

    # --- inference ---

    def obs_tensor(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Check a batch of uint8 observations ``(n, *obs_shape)`` and put it on the policy's device."""
        if isinstance(obs, np.ndarray):
            obs = torch.from_numpy(obs)
        if not isinstance(obs, torch.Tensor):
            raise ValueError(f"observations must be a numpy array or a torch tensor, got {type(obs).__name__}")
        self._check_obs(obs.dtype == torch.uint8, obs.dtype, tuple(obs.shape))
        return obs.to(self.device)

    def _check_obs(self, is_uint8: bool, dtype: object, shape: tuple[int, ...]) -> None:
        if not is_uint8 or len(shape) != 1 + len(self.obs_shape) or shape[1:] != self.obs_shape:
            raise ValueError(
                f"observations must be uint8 of shape (n, {', '.join(map(str, self.obs_shape))}), got {dtype} {shape}"
            )
        if shape[0] == 0:
            raise ValueError("observations must hold at least one sample, got an empty batch")

    def act(self, obs: np.ndarray | torch.Tensor, rule: ExitRule) -> ActResult:
        """Early-exit decision for a batch (batch-shrinking inference): argmax action of the exit that answered."""
        runner = self._runner
        if runner is not self.model and isinstance(obs, np.ndarray):
            # A compiled runtime: numpy in, numpy out, no eager-torch op on the way (each costs µs at batch 1).
            self._check_obs(obs.dtype == np.uint8, obs.dtype, obs.shape)
            log_probs, exit_index, flops = runner.infer_arrays(obs, rule)
            return ActResult(actions=log_probs.argmax(axis=-1), exit_index=exit_index, flops=flops,
                             log_probs=log_probs, backbone_flops=runner.backbone_flops(obs))
        x = self.obs_tensor(obs)
        out = self._runner.infer(x, rule)
        # Fresh tensors of the right dtypes (int64, float32): numpy views of them, no copies.
        return ActResult(
            actions=out.log_probs.argmax(dim=-1).cpu().numpy(),
            exit_index=out.exit_index.cpu().numpy(),
            flops=out.flops.cpu().numpy(),
            log_probs=out.log_probs.float().cpu().numpy(),
            backbone_flops=self.model.exit_costs(x).backbone,  # cached per input shape
        )

    @torch.no_grad()
    def all_exits(self, obs: np.ndarray | torch.Tensor) -> AllExits:
        """Every exit's output (ICs, ensembles, the expert's head) for the batch, from one full pass."""
        return self.model.all_exits(self.obs_tensor(obs))

    @torch.no_grad()
    def expert_log_probs(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(n, K)`` the plain expert's action log-probabilities (no head runs)."""
        return torch.log_softmax(self.model.backbone(self.obs_tensor(obs)), dim=-1)

    def expert_action(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(n,)`` int64 the plain expert's argmax action (what ``PPO.predict(deterministic=True)`` answers)."""
        return self.expert_log_probs(obs).argmax(dim=-1).cpu().numpy().astype(np.int64)

    # --- persistence ---

    def heads_payload(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Everything a heads file holds (see :func:`save_exit_heads`), as plain tensors and Python values.

        The core entries of :func:`ee_rl.core.heads_file.heads_payload` and :data:`AGENT_HEADS_FIELDS`: the game,
        the expert's hash, the action count, the observation shape, the IC architecture and ``extra``.
        """
        return heads_payload(self.model, self.method, {
            "game": self.game,
            "expert_sha256": self.expert_sha256,
            "num_actions": self.num_actions,
            "obs_shape": list(self.obs_shape),
            "ic_stride": self.ic_stride,
            "pool_size": self.pool_size,
            "extra": dict(extra or {}),
        })

    def load_heads_payload(self, payload: Mapping[str, Any], source: str = "heads file") -> None:
        """Load heads (and ensembles) from a :meth:`heads_payload` dict; a shape mismatch is a :class:`UserError`."""
        load_heads_state(self.model, payload, source, "this expert's heads")


# --- files ----------------------------------------------------------------------------------------------------


def save_exit_heads(path: str | Path, policy: EarlyExitPolicy, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the heads, ensembles, method, game and expert hash as one file, atomically.

    ``extra``: plain values kept alongside (e.g. env steps trained, final per-IC agreement); anything that
    ``torch.load(weights_only=True)`` could not read back is a ``ValueError``.
    """
    return write_heads_file(path, policy.heads_payload(extra))


def read_agent_heads(path: str | Path) -> dict[str, Any]:
    """Read and check an agent's heads file written by :func:`save_exit_heads` (no expert needed).

    A missing, corrupt or foreign file (vision heads included) is a one-line :class:`UserError`.
    """
    return read_heads_file(path, what="heads file", required=AGENT_HEADS_FIELDS)


def policy_from_payload(
    expert_policy: ActorCriticCnnPolicy,
    payload: Mapping[str, Any],
    *,
    expert_sha256: str | None,
    game: str | None,
    source: str = "heads file",
    also_accept: Collection[str] = (),
) -> EarlyExitPolicy:
    """Rebuild an :class:`EarlyExitPolicy` from an expert's SB3 policy and a heads payload, checking they match.

    ``expert_sha256`` is the expert's identity (its weights' hash, :func:`ee_rl.rl.checkpoint.weights_sha256`);
    ``also_accept`` lists older identities of the same expert that heads may record (the hash of the zip file they
    were trained from, before heads recorded weights). A different expert or game than the heads were trained on is
    a :class:`UserError`. The rebuilt policy records ``expert_sha256``, so heads saved from it carry the weights' hash.
    """
    saved_hash = payload.get("expert_sha256")
    if saved_hash is not None and expert_sha256 is not None and saved_hash not in (expert_sha256, *also_accept):
        raise UserError(
            f"{source} was trained on a different expert (sha256 {saved_hash[:12]}…), not this one "
            f"({expert_sha256[:12]}…); train heads for this expert with scripts/train_exits.py"
        )
    saved_game = payload.get("game")
    if saved_game is not None and game is not None and saved_game != game:
        raise UserError(f"{source} was trained on '{saved_game}', not '{game}'")
    if int(payload["num_actions"]) != int(expert_policy.action_space.n):
        raise UserError(
            f"{source} predicts {payload['num_actions']} actions but the expert has {expert_policy.action_space.n}"
        )
    policy = EarlyExitPolicy.from_expert(
        expert_policy,
        ExitMethod.from_dict(payload["method"]),
        game=saved_game if saved_game is not None else game,
        expert_sha256=expert_sha256 if expert_sha256 is not None else saved_hash,
        ic_stride=int(payload["ic_stride"]),
        pool_size=int(payload["pool_size"]),
    )
    policy.load_heads_payload(payload, source)
    return policy.eval()


def load_early_exit_agent(
    expert_path: str | Path, heads_path: str | Path, *, device: str = "cpu", game: str | None = None
) -> EarlyExitPolicy:
    """Load an expert zip and a heads file into an :class:`EarlyExitPolicy` (eval mode, on ``device``).

    The heads must have been trained on this very expert (same weights: a plain-SB3 re-save of it is the same
    expert) and game; ``game`` (optional, e.g.
    ``Pong``) is checked too. Any mismatch, missing or corrupt file is a one-line :class:`UserError`.
    """
    from ee_rl.core.fingerprint import file_sha256
    from ee_rl.rl.checkpoint import load_model, meta, weights_sha256
    from ee_rl.rl.games import rom_id

    payload = read_agent_heads(heads_path)
    wanted = rom_id(game) if game is not None else None
    saved_game = payload.get("game")
    if wanted is not None and saved_game is not None and saved_game != wanted:
        raise UserError(f"heads file {heads_path} was trained on '{saved_game}', not '{wanted}'")
    expert = load_model(expert_path, device="cpu", game=wanted)
    expert_game = meta(expert).get("game")
    policy = policy_from_payload(
        expert.policy,
        payload,
        expert_sha256=weights_sha256(expert),
        also_accept=(file_sha256(expert_path),),
        game=rom_id(expert_game) if expert_game is not None else wanted,
        source=f"heads file {heads_path}",
    )
    return policy.to(device)


def rekey_heads_file(heads_path: str | Path, expert_path: str | Path) -> str:
    """Make a heads file name its expert by the expert's weights hash (what heads record since experts are shipped
    as plain SB3 zips), after checking it fits ``expert_path``; every other entry is kept. Returns the hash.

    Older heads recorded the SHA-256 of the zip they were trained from; re-saving the expert (same weights, other
    bytes) would orphan them, so re-key them *before* re-saving it.
    """
    policy = load_early_exit_agent(expert_path, heads_path)  # refuses heads of another expert
    payload = read_agent_heads(heads_path)
    if payload.get("expert_sha256") != policy.expert_sha256:
        write_heads_file(heads_path, {**payload, "expert_sha256": policy.expert_sha256})
    return str(policy.expert_sha256)


@dataclasses.dataclass(frozen=True)
class AgentPaths:
    """Where a shipped agent's files are: ``agents/<Game>/expert.zip`` and ``agents/<Game>/exits-<method>.pt``."""

    expert: Path
    heads: Path


def is_agent_method(method: str) -> bool:
    """True for a method an agent can play: ``ztw``, ``sdn``, ``pbee`` or a ZTW ablation (``ztw-additive``, ...)."""
    if method in AGENT_METHODS:
        return True
    try:
        return method_by_name(method).name == method
    except UserError:
        return False


def onnx_cache_dir(heads_path: str | Path) -> Path:
    """Where an agent's exported ONNX segments are cached: ``.onnx/`` beside its heads file (keyed by a hash of the
    weights inside, see :func:`ee_rl.core.onnx_export.load_or_export_segments`)."""
    return Path(heads_path).parent / ".onnx"


def agent_paths(agent_dir: str | Path, method: str, heads_dir: str | Path | None = None) -> AgentPaths:
    """Paths of the expert and of the heads file for ``method`` (``ztw``, ``sdn``, a ZTW ablation such as
    ``ztw-cascade-only``; ``pbee`` uses the SDN heads). The heads file is looked up in ``heads_dir`` if given (e.g.
    ablations kept outside the agent folder), else beside the expert."""
    if not is_agent_method(method):
        raise UserError(f"method must be one of {', '.join(AGENT_METHODS)} or a ZTW ablation "
                        f"(ztw-cascade-only, ztw-ensemble-only, ztw-additive, ztw-no-stop-gradient), got {method!r}")
    agent_dir = Path(agent_dir)
    heads_method = "sdn" if method == "pbee" else method
    return AgentPaths(agent_dir / "expert.zip", Path(heads_dir or agent_dir) / f"exits-{heads_method}.pt")
