"""Tests of ee_rl.config's shared checks."""

from __future__ import annotations

import dataclasses

import pytest

from ee_rl.config import require_positive_ints
from ee_rl.errors import UserError


@dataclasses.dataclass
class _Counts:
    episodes: object = 3
    n_envs: object = 1


def test_require_positive_ints_accepts_positive_integers() -> None:
    require_positive_ints(_Counts(), ("episodes", "n_envs"))
    require_positive_ints(_Counts(episodes=0), ())  # only the named fields are checked


@pytest.mark.parametrize("bad", [0, -2, 2.0, 2.5, True, "3", None])
def test_require_positive_ints_names_the_first_bad_field_in_one_line(bad) -> None:
    with pytest.raises(UserError) as info:
        require_positive_ints(_Counts(n_envs=bad, episodes=bad), ("n_envs", "episodes"))
    assert str(info.value) == f"n_envs must be a positive integer, got {bad!r}"
