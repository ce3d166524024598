"""The agents a sweep plays: loaded once per method (PBEE shares the SDN heads), each setting's player."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ee_rl.errors import UserError
from ee_rl.rl.policy import EarlyExitPolicy, agent_paths, load_early_exit_agent

#: The method name of the full-policy setting: the expert itself, played once and shared by every method.
EXPERT = "expert"


def check_agent_files(agent_dir: str | Path, methods: Sequence[str], heads_dir: str | Path | None = None) -> None:
    """Raise a one-line :class:`UserError` naming the first file of ``methods``' agents that does not exist."""
    for method in methods:
        paths = agent_paths(agent_dir, method, heads_dir)
        for path in (paths.expert, paths.heads):
            if not path.is_file():
                raise UserError(f"agent file not found: {path} (needed for method {method})")


def load_agents(
    agent_dir: str | Path, methods: Sequence[str], game: str, heads_dir: str | Path | None = None
) -> dict[str, EarlyExitPolicy]:
    """Load every method's agent first (pbee shares the sdn heads), so a missing file fails before any game.

    Heads files are read from ``heads_dir`` if given, else from ``agent_dir`` (see :func:`agent_paths`).
    """
    check_agent_files(agent_dir, methods, heads_dir)
    loaded: dict[Path, EarlyExitPolicy] = {}
    policies = {}
    for method in methods:
        paths = agent_paths(agent_dir, method, heads_dir)
        if paths.heads not in loaded:
            policy = load_early_exit_agent(paths.expert, paths.heads, game=game)
            wanted = "sdn" if method == "pbee" else method
            if policy.method.name != wanted:  # rows are labelled by the method asked for: the file must hold it
                raise UserError(f"{paths.heads} holds {policy.method.name} heads, not {wanted}")
            loaded[paths.heads] = policy
        policies[method] = loaded[paths.heads]
    return policies


def player_for(agents: dict[str, EarlyExitPolicy], method: str) -> EarlyExitPolicy:
    """The agent that plays ``method``'s settings; the full policy (:data:`EXPERT`, no head runs) is the first one."""
    return next(iter(agents.values())) if method == EXPERT else agents[method]
