"""User-facing errors: a mistake in what the user asked for, reported as one line without a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Bad input from the user (unknown game, missing file, invalid value).

    Scripts catch it via :func:`cli_main` and print ``error: <message>`` on one line, exit code 2.
    """


def cli_main(main: Callable[[], T]) -> Callable[[], T]:
    """Wrap a script's ``main`` so that a :class:`UserError` becomes a one-line message and exit code 2."""

    @wraps(main)
    def wrapper() -> T:
        try:
            return main()
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
