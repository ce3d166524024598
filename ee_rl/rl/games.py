"""Map what users type (``Pong``, ``ALE/Pong-v5``, ``PongNoFrameskip-v4``, ``ms_pacman``) to ALE ROM ids."""

from __future__ import annotations

import difflib
import re
from functools import lru_cache

from ee_rl.errors import UserError

#: The eight games of the ZTW paper's RL experiments (display names).
PAPER_GAMES: tuple[str, ...] = (
    "Pong",
    "Qbert",
    "Seaquest",
    "Phoenix",
    "Riverraid",
    "AirRaid",
    "Breakout",
    "MsPacman",
)

#: Average human scores of Mnih et al. (2015, Nature, "Human-level control through deep RL"), Extended Data
#: Table 2, the human reference lines of ZTW's Figures 3 and 6; keyed by ROM id. Phoenix and AirRaid are not among
#: that paper's 49 games, so they have no value here (and no human line).
HUMAN_SCORES: dict[str, float] = {
    "pong": 9.3,
    "qbert": 13455.0,
    "seaquest": 20182.0,
    "riverraid": 13513.0,
    "breakout": 31.8,
    "ms_pacman": 15693.0,
}

_ID_PATTERN = re.compile(r"^(?:ALE/)?(?P<name>[A-Za-z_]+?)(?:NoFrameskip|Deterministic)?(?:-v\d+)?$")


@lru_cache(maxsize=1)
def _rom_ids() -> dict[str, str]:
    """All ROMs shipped in ale-py, keyed by their id with underscores removed (``mspacman`` → ``ms_pacman``)."""
    from ale_py import roms

    return {rom.replace("_", ""): rom for rom in roms.get_all_rom_ids()}


def rom_id(env: str) -> str:
    """Return the ALE ROM id (snake case, e.g. ``ms_pacman``) for a game name or a full Atari env id.

    Accepts ``Pong``, ``pong``, ``MsPacman``, ``ms_pacman``, ``ALE/Pong-v5``, ``PongNoFrameskip-v4``.
    Raises :class:`UserError` for a non-Atari id or an unknown game, suggesting close names.
    """
    match = _ID_PATTERN.match(env.strip())
    roms = _rom_ids()
    key = match.group("name").replace("_", "").lower() if match else ""
    if key in roms:
        return roms[key]
    if match is None or (("-v" in env) and not env.startswith("ALE/") and "NoFrameskip" not in env):
        raise UserError(
            f"'{env}' is not an Atari game: use a game name such as Pong or Qbert, or an ALE id such as ALE/Pong-v5"
        )
    suggestions = difflib.get_close_matches(key, list(roms), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(display_name(roms[s]) for s in suggestions)}?" if suggestions else ""
    raise UserError(f"unknown Atari game '{env}'{hint} (the paper's games: {', '.join(PAPER_GAMES)})")


def display_name(rom: str) -> str:
    """CamelCase name of a ROM id as used for paths and flags: ``ms_pacman`` → ``MsPacman``."""
    return "".join(part.capitalize() for part in rom.split("_"))
