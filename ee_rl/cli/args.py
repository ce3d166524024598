"""One set of argument checks for every command: bounded seeds, thread and worker counts, game counts and fractions,
checked while the arguments are parsed (before any work starts or any file is created), and an argument parser
whose errors are one line (``error: ...``, exit code 2), as :func:`ee_rl.errors.cli_main` reports a UserError.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from typing import NoReturn

#: Seeds are what numpy and ALE accept: unsigned 32-bit integers.
MAX_SEED = 2**32 - 1
#: Far beyond any real run, but small enough that a typo (an extra zero or two) is caught before it allocates.
MAX_ENVS = 256
MAX_EPISODES = 100_000
MAX_TIMESTEPS = 10**10
#: ALE's cap on a game (as ``ee_rl.rl.envs.MAX_EPISODE_FRAMES``, not imported: argument parsing stays light).
MAX_EPISODE_FRAMES = 108_000


def cpu_count() -> int:
    """CPUs this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that reports a bad command line in one line (no usage block) and exits with 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_in(low: int, high: int | Callable[[], int], what: str) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]`` (``high`` may be computed when parsing, e.g. CPUs)."""

    def parse(text: str) -> int:
        value = _integer(text)
        top = high() if callable(high) else high
        if not low <= value <= top:
            raise argparse.ArgumentTypeError(f"{what} must be an integer in [{low}, {top:,}], got {value}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


def seed(text: str) -> int:
    """An argparse ``type`` for seeds: 0 ≤ seed < 2³²."""
    return int_in(0, MAX_SEED, "seed")(text)


def threads(text: str) -> int:
    """Torch intra-op threads: 0 (= all cores, where the command allows it) up to this machine's CPUs."""
    return int_in(0, cpu_count, "threads")(text)


def workers(text: str) -> int:
    """Settings played at once, one process each: 1 up to this machine's CPUs."""
    return int_in(1, cpu_count, "workers")(text)


def ale_threads(text: str) -> int:
    """Native emulator threads: 1 up to this machine's CPUs."""
    return int_in(1, cpu_count, "ale_threads")(text)


def episode_frames(text: str) -> int:
    """Emulator frames after which a game is cut: 1 to ALE's :data:`MAX_EPISODE_FRAMES` default of 108,000."""
    return int_in(1, MAX_EPISODE_FRAMES, "max_episode_frames")(text)


def n_envs(text: str) -> int:
    """Parallel environments: 1 to :data:`MAX_ENVS`."""
    return int_in(1, MAX_ENVS, "n_envs")(text)


def episodes(text: str) -> int:
    """Full games: 1 to :data:`MAX_EPISODES`."""
    return int_in(1, MAX_EPISODES, "episodes")(text)


def timesteps(text: str) -> int:
    """Env steps in total: 1 to :data:`MAX_TIMESTEPS`."""
    return int_in(1, MAX_TIMESTEPS, "timesteps")(text)


def fraction(text: str) -> float:
    """A fraction in (0, 1], e.g. a budget of the expert's FLOPs (0.5 = 50 %; 7 is not 700 %)."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1] (0.5 = 50 %), got {text}")
    return value


def probability(text: str) -> float:
    """A probability strictly between 0 and 1, e.g. the error probability δ of a guarantee (0.1 = 10 %)."""
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a probability in (0, 1) (0.1 = 10 %), got {text}")
    return value


def non_negative(text: str) -> float:
    """A finite number ≥ 0 (e.g. a tolerated drop in points)."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def ray_address(text: str) -> str:
    """``--ray-address``: ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``."""
    from ee_rl.errors import UserError
    from ee_rl.exec import check_ray_address

    try:
        return check_ray_address(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--ray-address ")) from None


def add_executor_args(parser: argparse.ArgumentParser, what: str, default: str = "serial") -> None:
    """Add ``--executor {serial,process,ray}`` and ``--ray-address`` (where the command's many ``what`` run)."""
    from ee_rl.exec import EXECUTORS

    parser.add_argument("--executor", choices=EXECUTORS, default=None,
                        help=f"where the {what} run: serial (this process), process (local processes), ray (a Ray "
                             f"cluster, or a Ray started on this machine; pip install 'ee_rl[ray]') "
                             f"(default: {default})")
    parser.add_argument("--ray-address", type=ray_address, default=None, metavar="ADDRESS",
                        help="with --executor ray: 'auto' (the cluster this machine joined with ray start) or "
                             "ray://HEAD:10001; default: start a Ray on this machine")


def runtime(text: str) -> str:
    """``torch`` or ``onnx``; ``onnx`` only where onnxruntime, onnx and onnxscript are installed (checked now)."""
    from ee_rl.core.runtime import check_runtime
    from ee_rl.errors import UserError

    try:
        return check_runtime(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--runtime onnx needs ")) from None


def add_runtime_arg(
    parser: argparse.ArgumentParser, what: str = "early-exit decisions", default: str | None = "torch"
) -> None:
    """Add ``--runtime {torch,onnx}``: which runtime answers the command's ``what`` (``default`` None: the
    command's config decides)."""
    shown = default if default is not None else "config: torch"
    parser.add_argument("--runtime", type=runtime, default=default, metavar="{torch,onnx}",
                        help=f"what runs the {what}: torch (eager PyTorch) or onnx (ONNX Runtime, one graph per "
                             "exit segment, exported on first use and cached in .onnx/ beside the weights; "
                             f"pip install 'ee_rl[onnx]') (default: {shown})")
