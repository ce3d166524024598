"""Atomic, compressed SB3 checkpoints that know which game and run they belong to."""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticCnnPolicy
from stable_baselines3.common.vec_env import VecEnv

from ee_rl.core.fingerprint import state_dict_sha256
from ee_rl.errors import UserError
from ee_rl.io import atomic_write_bytes
from ee_rl.rl.fast_ppo import ChannelsLastCnnPolicy, Uint8RolloutBuffer
from ee_rl.rl.games import rom_id

#: Attribute of the PPO object where ee_rl keeps run metadata; SB3 saves and restores it with the model.
META_ATTR = "ee_rl_meta"
#: ``PPO.load`` custom objects that run any NatureCNN PPO zip in ee_rl's fast layout.
FAST_CLASSES = {"policy_class": ChannelsLastCnnPolicy, "rollout_buffer_class": Uint8RolloutBuffer}


def model_bytes(model: PPO) -> bytes:
    """The model as an SB3 zip, re-packed with deflate (SB3 stores entries uncompressed; Adam's state
    compresses by ~45 %, which keeps a resumable NatureCNN checkpoint under 20 MB)."""
    raw = io.BytesIO()
    model.save(raw)
    packed = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw.getvalue())) as src, zipfile.ZipFile(
        packed, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6
    ) as dst:
        for item in src.infolist():
            dst.writestr(item.filename, src.read(item.filename))
    return packed.getvalue()


def save_model_atomic(model: PPO, path: str | Path) -> Path:
    """Save ``model`` to ``path`` so that a crash at any moment leaves either the old or the new file."""
    return atomic_write_bytes(path, model_bytes(model))


def load_model(
    path: str | Path, env: VecEnv | None = None, device: str = "auto", game: str | None = None, *, fast: bool = True
) -> PPO:
    """Load a PPO zip; a missing, corrupt or wrong-game file is a :class:`UserError`.

    ``game`` (a game name or ALE id, e.g. ``Pong``) is checked against the metadata saved by ee_rl, when the
    file has it. With ``fast`` (default) the policy and rollout buffer are ee_rl's fast layout
    (:mod:`ee_rl.rl.fast_ppo`: the same weights and actions) whichever classes the zip names, so a plain SB3 zip
    (a shipped ``expert.zip``) runs as fast as the training checkpoint it came from; ``fast=False`` keeps the
    zip's own classes.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"checkpoint {path} is corrupt or not an SB3 model (not a zip file)")
    try:
        model = PPO.load(path, env=env, device=device, custom_objects=FAST_CLASSES if fast else None)
    except Exception as exc:  # SB3 raises many types for broken or foreign files
        raise UserError(f"checkpoint {path} could not be loaded as a PPO model: {type(exc).__name__}: {exc}") from None
    saved_game = meta(model).get("game")
    if game is not None and saved_game is not None and rom_id(saved_game) != rom_id(game):
        raise UserError(f"checkpoint {path} was trained on '{saved_game}', not '{game}'")
    return model


@contextlib.contextmanager
def saved_as_plain_sb3(model: PPO) -> Iterator[PPO]:
    """Within the block, ``model`` names SB3's own policy and rollout-buffer classes, so that ``model.save`` writes
    a zip that plain ``PPO.load`` reads without ee_rl (the weights and module names are SB3's already)."""
    kept = (model.policy_class, model.rollout_buffer_class)
    try:
        model.policy_class, model.rollout_buffer_class = ActorCriticCnnPolicy, RolloutBuffer
        yield model
    finally:
        model.policy_class, model.rollout_buffer_class = kept


def weights_sha256(model: PPO) -> str:
    """The expert's identity: a hash of its policy weights (:func:`ee_rl.core.fingerprint.state_dict_sha256`),
    the same for a training checkpoint, its plain-SB3 ``expert.zip`` and a copy re-saved anywhere."""
    return state_dict_sha256(model.policy.state_dict())


def meta(model: PPO) -> dict[str, Any]:
    """The ee_rl metadata dict stored on a model (empty for models not trained by ee_rl)."""
    return dict(getattr(model, META_ATTR, None) or {})



