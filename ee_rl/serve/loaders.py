"""Loading what to serve (the Pong agent, a vision checkpoint, or a random-weight NatureCNN) and real inputs for it.

Each loader reduces its kind to a :class:`ServedModel` (core model + wire input spec + rule); the server never sees
RL or vision details. :func:`add_model_arguments` / :func:`served_model_from_args` give ``scripts/serve.py`` and
``scripts/load_test.py`` the same model flags, so the load test's offline model is exactly the served one.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from ee_rl.cli import args as argtypes
from ee_rl.core import ExitRule, MaxProbExit, rule_for_method
from ee_rl.errors import UserError
from ee_rl.serve.codecs import InputSpec, PayloadError, check_batch
from ee_rl.serve.served import ServedModel, serving_rule

#: A random-weight NatureCNN has the Pong agent's architecture and cost, not its answers (for load tests).
RANDOM_NATURE_CNN_ACTIONS = 6
#: Its IC weights are multiplied by this: freshly initialised heads are near-uniform (max prob ~0.18 for every
#: observation); scaled up, IC 1 is confident on some Pong observations and not others (median max prob ~0.97).
RANDOM_NATURE_CNN_HEAD_SCALE = 100.0


def load_agent(agent_dir: str | Path, method: str = "ztw", rule: ExitRule | None = None) -> ServedModel:
    """The shipped Atari agent in ``agent_dir`` (``expert.zip`` + ``exits-<method>.pt``): observations → actions.

    Wire format: uint8 ``(N, 4, 84, 84)`` stacked grayscale frames (the paper's Atari preprocessing).
    """
    from ee_rl.rl.policy import agent_paths, load_early_exit_agent

    paths = agent_paths(agent_dir, method)
    policy = load_early_exit_agent(paths.expert, paths.heads)
    return ServedModel(
        name=f"{policy.game or Path(agent_dir).name} agent ({method})",
        model=policy.model,
        input_spec=InputSpec(policy.obs_shape, "uint8"),
        rule=rule if rule is not None else MaxProbExit(0.9),
        label_name="action",
        info={"kind": "atari_agent", "game": policy.game, "method": method, "agent_dir": str(agent_dir)},
    )


def load_vision(
    exits_path: str | Path, backbone_path: str | Path | None = None, rule: ExitRule | None = None
) -> ServedModel:
    """A vision early-exit checkpoint (``exits-<variant>.pt`` + its ``backbone.pt``): images → classes.

    Wire format: float32 ``(N, C, H, W)`` images in [0, 1] (the backbone normalises them itself).
    """
    from ee_rl.vision.checkpoint import load_exit_model, load_torch

    model, record = load_exit_model(exits_path, backbone_path)  # checks the heads belong to this backbone
    backbone = load_torch(backbone_path or Path(exits_path).parent / "backbone.pt", "backbone checkpoint")
    names = backbone.get("class_names")
    return ServedModel(
        name=f"{record.get('dataset', 'vision')} {record.get('arch', '')} ({Path(exits_path).stem})".strip(),
        model=model,
        input_spec=InputSpec(tuple(backbone["input_shape"]), "float32", low=0.0, high=1.0),
        rule=rule if rule is not None else MaxProbExit(0.9),
        label_name="class",
        class_names=list(names) if names else None,
        info={"kind": "vision", "dataset": record.get("dataset"), "seed": backbone.get("seed"),
              "checkpoint": str(exits_path)},
    )


def random_nature_cnn(seed: int = 0, rule: ExitRule | None = None) -> ServedModel:
    """A random-weight SB3 NatureCNN early-exit model (ZTW: cascade + geometric ensembles) with the Pong agent's
    architecture, wire format and FLOPs — for load tests and latency when no trained agent is at hand.

    Its answers are deterministic (seeded) but meaningless as actions. The ICs' weights are scaled by
    :data:`RANDOM_NATURE_CNN_HEAD_SCALE` so that a threshold near 0.97 lets about half the observations out at IC 1.
    """
    from ee_rl.rl.policy import ATARI_OBS_SHAPE, build_nature_cnn_early_exit

    model, _ = build_nature_cnn_early_exit(RANDOM_NATURE_CNN_ACTIONS, ensembles=True, seed=seed)
    with torch.no_grad():
        for head in model.heads:
            head.linear.weight.mul_(RANDOM_NATURE_CNN_HEAD_SCALE)
            head.linear.bias.mul_(RANDOM_NATURE_CNN_HEAD_SCALE)
    return ServedModel(
        name=f"random-weight NatureCNN (seed {seed})",
        model=model,
        input_spec=InputSpec(ATARI_OBS_SHAPE, "uint8"),
        rule=rule if rule is not None else MaxProbExit(0.9),
        label_name="action",
        info={"kind": "random_nature_cnn", "seed": seed},
    )


def read_inputs(path: str | Path, spec: InputSpec, what: str = "inputs file") -> np.ndarray:
    """A ``.npy`` file of wire-format items ``(N, *spec.shape)``; anything else is a :class:`UserError`.

    ``what`` names the file in error messages (e.g. ``"calibration file"``).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{what} {path}: not a .npy array ({type(exc).__name__})") from None
    if not isinstance(array, np.ndarray) or array.ndim < 1:
        if hasattr(array, "close"):
            array.close()  # an NpzFile holds the file open
        got = "an .npz archive" if not isinstance(array, np.ndarray) else "a 0-d array"
        raise UserError(f"{what} {path}: got {got}; expected one array (numpy.save .npy) shaped {spec.describe()}")
    try:
        return check_batch(array, spec, max_items=array.shape[0])
    except PayloadError as exc:
        raise UserError(f"{what} {path}: {exc}") from None


def atari_observations(game: str, n: int, seed: int = 0, n_envs: int = 8) -> np.ndarray:
    """``n`` real observations ``(n, 4, 84, 84)`` uint8 from ``game`` played with uniformly random actions.

    Evaluation-mode envs (the paper's wrappers), several in parallel so the frames are varied.
    """
    from ee_rl.rl.envs import make_atari_env

    env = make_atari_env(game, n_envs=n_envs, training=False, seed=seed)
    try:
        rng = np.random.default_rng(seed)
        frames = [env.reset()]
        total = n_envs
        while total < n:
            obs, _, _, _ = env.step(rng.integers(env.action_space.n, size=n_envs))
            frames.append(obs)
            total += n_envs
    finally:
        env.close()
    return np.ascontiguousarray(np.concatenate(frames)[:n])


def vision_images(served: ServedModel, data_dir: str | Path | None, n: int) -> np.ndarray:
    """The first ``n`` test images ``(n, C, H, W)`` float32 in [0, 1] of the dataset the vision model was trained on."""
    from ee_rl.vision.data import load_dataset

    dataset = served.info.get("dataset")
    if dataset is None:
        raise UserError("the vision checkpoint does not name its dataset; pass --inputs FILE.npy")
    data = load_dataset(dataset, data_dir, seed=int(served.info.get("seed") or 0))  # the seed picks digits' split
    images = [x for x, _ in data.test.batches(min(n, 512))]
    array = torch.cat(images)[:n].numpy().astype(np.float32)
    return check_batch(np.ascontiguousarray(array), served.input_spec, max_items=len(array))


# --- command line ---------------------------------------------------------------------------------------------


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags choosing what is served and with which exit rule (shared by serve and load-test scripts)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--agent", type=Path, metavar="DIR", help="Atari agent directory (expert.zip + exits-*.pt)")
    source.add_argument("--vision", type=Path, metavar="CHECKPOINT", help="vision exits-<variant>.pt checkpoint")
    source.add_argument(
        "--random-nature-cnn", action="store_true",
        help="a random-weight NatureCNN with the Pong agent's architecture (load tests without a trained agent)",
    )
    parser.add_argument("--method", default="ztw", help="agent heads: ztw, sdn or pbee (default ztw)")
    parser.add_argument("--backbone", type=Path, metavar="PATH", help="vision backbone.pt (default: beside CHECKPOINT)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed of --random-nature-cnn (default 0)")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=float,
                      help="exit when max probability > THRESHOLD (pbee: patience); default for --agent: the cheapest "
                           "setting of its sweep.csv within 1 point or 5 %% of the expert, else configs/serve.yaml's")
    rule.add_argument("--tolerance", type=float, help="SelfXit: per-exit thresholds for this accuracy-drop tolerance")
    parser.add_argument(
        "--calibration", type=Path, metavar="FILE.npy", help="unlabelled inputs the --tolerance thresholds are fit on"
    )
    argtypes.add_runtime_arg(parser, "served model's batches")


def served_model_from_args(args: argparse.Namespace, default_threshold: float) -> ServedModel:
    """Load the model chosen by :func:`add_model_arguments` flags and set its rule.

    Without ``--threshold`` or ``--tolerance``, an agent plays its recommended setting (its sweep's cheapest within
    1 point or 5 % of the expert, :func:`ee_rl.rl.agent.recommended_threshold`) when it has a ``sweep.csv``, else
    ``default_threshold`` (PBEE: patience 1). ``info`` (shown by ``GET /health``) says which threshold is in use and
    where it came from.
    """
    if args.agent is not None:
        served = load_agent(args.agent, args.method)
    elif args.vision is not None:
        served = load_vision(args.vision, args.backbone)
    else:
        served = random_nature_cnn(args.seed)
    if args.calibration is not None and args.tolerance is None:
        raise UserError("--calibration is only used with --tolerance")
    threshold, source = args.threshold, "--threshold"
    if threshold is None and args.tolerance is None:
        threshold, source = _default_threshold(args, default_threshold)
    if args.agent is not None and args.method == "pbee":
        if args.tolerance is not None:
            raise UserError("--tolerance chooses confidence thresholds; pbee uses patience: pass --threshold PATIENCE")
        rule = rule_for_method("pbee", threshold)
    elif args.tolerance is not None:
        calibration = None
        if args.calibration is not None:
            calibration = read_inputs(args.calibration, served.input_spec, what="calibration file")
        rule = serving_rule(
            served.model,
            tolerance=args.tolerance,
            calibration=served.model_input(calibration) if calibration is not None else None,
        )
        source = "--tolerance"
    else:
        rule = serving_rule(served.model, threshold=threshold)
    info = {**served.info, "threshold": threshold, "tolerance": args.tolerance, "rule_source": source}
    try:
        served = dataclasses.replace(served, rule=rule, info=info)
    except ValueError as exc:  # the rule does not fit the model (e.g. one threshold per IC)
        raise UserError(str(exc)) from None
    return served.use_runtime(args.runtime, threads=getattr(args, "threads", None) or 1,
                              cache_dir=_onnx_cache_dir(args))


def _onnx_cache_dir(args: argparse.Namespace) -> Path | None:
    """Exported graphs go beside the served weights (None: the user's cache, for the random NatureCNN)."""
    if args.agent is not None:
        from ee_rl.rl.policy import agent_paths, onnx_cache_dir

        return onnx_cache_dir(agent_paths(args.agent, args.method).heads)
    if args.vision is not None:
        return Path(args.vision).parent / ".onnx"
    return None


def _default_threshold(args: argparse.Namespace, configured: float) -> tuple[float, str]:
    """The threshold used when none is given, and where it comes from."""
    if args.agent is not None and (Path(args.agent) / "sweep.csv").is_file():
        from ee_rl.rl.agent import recommended_threshold

        try:
            threshold = recommended_threshold(args.agent, args.method)
        except UserError:
            pass  # no setting of this method is within the drop: fall back to the configured threshold
        else:
            return threshold, f"{Path(args.agent) / 'sweep.csv'}: cheapest within 1 point or 5 % of the expert"
    if args.agent is not None and args.method == "pbee":
        return 1.0, "default patience"
    return configured, "configs/serve.yaml threshold"
