"""Export a shipped expert in the folder layout rl-baselines3-zoo (``rl_zoo3``) reads, so that its ``enjoy`` (and
anything else built on the zoo) plays our expert: ``<out>/ppo/<Env>NoFrameskip-v4_<id>/<Env>NoFrameskip-v4.zip``
beside ``<Env>NoFrameskip-v4/config.yml`` (the zoo's Atari hyper-parameters: AtariWrapper, 4-frame stack) and
``args.yml``. The zip is copied as it is: shipped experts are plain SB3 zips.
"""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path

import yaml

from ee_rl.errors import UserError
from ee_rl.io import atomic_write_bytes, atomic_write_text, check_dir_writable
from ee_rl.rl.games import display_name, rom_id

#: What the zoo's Atari environments are called (frame skip done by its AtariWrapper, not by ALE).
ZOO_ENV_SUFFIX = "NoFrameskip-v4"


def zoo_env_id(game: str) -> str:
    """The zoo's env id for a game: ``Pong`` → ``PongNoFrameskip-v4``."""
    return f"{display_name(rom_id(game))}{ZOO_ENV_SUFFIX}"


#: ``config.yml``: how the zoo builds the env its Atari PPO agents play (``create_test_env`` reads these keys).
ZOO_ATARI_HYPERPARAMS = {
    "env_wrapper": ["stable_baselines3.common.atari_wrappers.AtariWrapper"],
    "frame_stack": 4,
    "policy": "CnnPolicy",
    "normalize": False,
}


def names_ee_rl_classes(expert: Path) -> bool:
    """True if the SB3 zip's policy or rollout-buffer class is one of ee_rl's (loading it would need ee_rl)."""
    with zipfile.ZipFile(expert) as archive:
        data = json.loads(archive.read("data"))
    for key in ("policy_class", "rollout_buffer_class"):
        entry = data.get(key)
        if isinstance(entry, dict) and b"ee_rl." in base64.b64decode(entry.get(":serialized:", "")):
            return True
    return False


def export_zoo(agent_dir: str | Path, out: str | Path, exp_id: int = 1) -> Path:
    """Write ``agent_dir``'s ``expert.zip`` into ``out`` in the zoo's layout; returns the run folder."""
    agent_dir, out = Path(agent_dir), Path(out)
    expert, evaluation = agent_dir / "expert.zip", agent_dir / "expert_eval.json"
    for path in (expert, evaluation):
        if not path.is_file():
            raise UserError(f"{path} not found: --agent must be an agent folder with a published expert")
    if exp_id < 1:
        raise UserError(f"the experiment id must be a positive integer, got {exp_id}")
    if names_ee_rl_classes(expert):  # published before experts were plain SB3 zips: the zoo could not load it
        raise UserError(f"{expert} names ee_rl classes; re-publish it (scripts/publish_expert.py) first")
    record = json.loads(evaluation.read_text())
    env_id = zoo_env_id(record["game"])
    run = out / "ppo" / f"{env_id}_{exp_id}"
    check_dir_writable(run)
    atomic_write_bytes(run / f"{env_id}.zip", expert.read_bytes())
    atomic_write_text(run / env_id / "config.yml", yaml.safe_dump(ZOO_ATARI_HYPERPARAMS, sort_keys=True))
    args = {"algo": "ppo", "env": env_id, "env_kwargs": None, "exp_id": exp_id, "seed": record.get("seed", 0),
            "source": str(expert)}
    atomic_write_text(run / env_id / "args.yml", yaml.safe_dump(args, sort_keys=True))
    return run
