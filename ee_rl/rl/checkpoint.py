"""Atomic, compressed SB3 checkpoints that know which game and run they belong to."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv

from ee_rl.errors import UserError
from ee_rl.rl.games import rom_id
from ee_rl.io import atomic_write_bytes

#: Attribute of the PPO object where ee_rl keeps run metadata; SB3 saves and restores it with the model.
META_ATTR = "ee_rl_meta"


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


def load_model(path: str | Path, env: VecEnv | None = None, device: str = "auto", game: str | None = None) -> PPO:
    """Load a PPO zip; a missing, corrupt or wrong-game file is a :class:`UserError`.

    ``game`` (a game name or ALE id, e.g. ``Pong``) is checked against the metadata saved by ee_rl, when the
    file has it.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"checkpoint {path} is corrupt or not an SB3 model (not a zip file)")
    try:
        model = PPO.load(path, env=env, device=device)
    except Exception as exc:  # SB3 raises many types for broken or foreign files
        raise UserError(f"checkpoint {path} could not be loaded as a PPO model: {type(exc).__name__}: {exc}") from None
    saved_game = meta(model).get("game")
    if game is not None and saved_game is not None and rom_id(saved_game) != rom_id(game):
        raise UserError(f"checkpoint {path} was trained on '{saved_game}', not '{game}'")
    return model


def meta(model: PPO) -> dict[str, Any]:
    """The ee_rl metadata dict stored on a model (empty for models not trained by ee_rl)."""
    return dict(getattr(model, META_ATTR, None) or {})


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (identifies an expert for the heads trained on it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

