"""The exit method: how the internal classifiers are wired and combined (ZTW, SDN, or a ZTW ablation).

ZTW = cascade connections (eq. 1) + geometric ensembles (eq. 2); SDN = independent ICs, no ensembles; the ablations
of ZTW appendix C drop the ensembles (C.1 cascade only), the cascade (C.1 ensemble only), make the ensembles
additive (C.2) or let gradients flow through the cascade (C.3). PBEE trains nothing of its own: it reads the SDN heads
with the patience rule. One :class:`ExitMethod` serves the RL agents and the vision models alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ee_rl.core.ensemble import ENSEMBLE_KINDS
from ee_rl.errors import UserError

#: Methods that train heads of their own (each has its own heads file).
METHODS = ("ztw", "sdn")
#: Ablation suffixes of ZTW, in the order :attr:`ExitMethod.name` writes them.
ABLATIONS = ("cascade-only", "ensemble-only", "additive", "no-stop-gradient")


@dataclasses.dataclass(frozen=True)
class ExitMethod:
    """How the ICs are wired and combined: ZTW, SDN, or an appendix-C ablation of ZTW.

    Build one with :func:`exit_method` (from ``--method`` and the ablation flags) or :func:`method_by_name`.

    Attributes:
        method: ``"ztw"`` (cascade and/or ensembles) or ``"sdn"`` (independent ICs, no ensembles).
        cascade: IC m also gets IC m-1's logits (ZTW eq. 1).
        ensemble: ``"geometric"`` (ZTW eq. 2), ``"additive"`` (appendix C.2) or None (each IC answers alone).
        detach_cascade: stop the gradient through the cascade input (ZTW default; False = appendix C.3 ablation).
    """

    method: str = "ztw"
    cascade: bool = True
    ensemble: str | None = "geometric"
    detach_cascade: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.ensemble is not None and self.ensemble not in ENSEMBLE_KINDS:
            raise UserError(f"ensemble must be one of {', '.join(ENSEMBLE_KINDS)} or None, got {self.ensemble!r}")
        if self.method == "sdn" and (self.cascade or self.ensemble is not None or not self.detach_cascade):
            raise UserError("the ablation flags apply to --method ztw only; sdn has independent ICs and no ensembles")
        if self.method == "ztw" and not self.cascade and self.ensemble is None:
            raise UserError("ztw without cascade and without ensembles is sdn: use --method sdn")
        if not self.cascade and not self.detach_cascade:
            raise UserError("--no-stop-gradient needs cascade connections (it is not compatible with ensemble-only)")

    @property
    def name(self) -> str:
        """Short name for file names and reports: ``ztw``, ``sdn``, or ``ztw-<ablations>`` (see :data:`ABLATIONS`)."""
        if self.method == "sdn":
            return "sdn"
        used = (self.ensemble is None, not self.cascade, self.ensemble == "additive", not self.detach_cascade)
        return "-".join(["ztw", *(suffix for suffix, on in zip(ABLATIONS, used) if on)])

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (for heads files and JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ExitMethod:
        """Inverse of :meth:`to_dict`.

        Also reads the dicts of vision exit files written before the RL and vision methods were one type: they
        lack ``method`` (independent ICs without ensembles were SDN, anything else ZTW) and may lack
        ``detach_cascade`` (then True).
        """
        cascade = bool(values["cascade"])
        ensemble = values["ensemble"]
        method = values.get("method", "sdn" if not cascade and ensemble is None else "ztw")
        return cls(method, cascade, ensemble, bool(values.get("detach_cascade", True)))


def exit_method(
    method: str = "ztw",
    *,
    cascade_only: bool = False,
    ensemble_only: bool = False,
    additive: bool = False,
    no_stop_gradient: bool = False,
) -> ExitMethod:
    """The :class:`ExitMethod` for ``--method`` and the appendix-C ablation flags (ZTW only).

    ``cascade_only``: no ensembles (C.1); ``ensemble_only``: no cascade connections (C.1); ``additive``: additive
    instead of geometric ensembles (C.2); ``no_stop_gradient``: gradients flow through the cascade (C.3). A flag
    that does not apply (to SDN, or together with one that removes what it changes) is a :class:`UserError`.
    """
    if method not in METHODS:
        raise UserError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    flags = {
        "--cascade-only": cascade_only,
        "--ensemble-only": ensemble_only,
        "--additive": additive,
        "--no-stop-gradient": no_stop_gradient,
    }
    used = [name for name, on in flags.items() if on]
    if method == "sdn":
        if used:
            raise UserError(f"{', '.join(used)} are ablations of ztw; use them with --method ztw, not sdn")
        return SDN
    if cascade_only and ensemble_only:
        raise UserError("--cascade-only and --ensemble-only exclude each other (together they are sdn)")
    if cascade_only and additive:
        raise UserError("--additive changes the ensembles, but --cascade-only removes them")
    if ensemble_only and no_stop_gradient:
        raise UserError("--no-stop-gradient acts on cascade connections, but --ensemble-only removes them")
    ensemble = None if cascade_only else ("additive" if additive else "geometric")
    return ExitMethod("ztw", cascade=not ensemble_only, ensemble=ensemble, detach_cascade=not no_stop_gradient)


def method_by_name(name: str) -> ExitMethod:
    """Parse a name written by :attr:`ExitMethod.name` (e.g. ``ztw-additive``); only the canonical spelling."""
    if name == "sdn":
        return SDN
    head, _, rest = name.partition("-")
    if head != "ztw":
        raise UserError(f"unknown method {name!r}; accepted: sdn, ztw and ztw-<ablations>")
    flags = dict.fromkeys(ABLATIONS, False)
    while rest:
        match = next((k for k in ABLATIONS if rest == k or rest.startswith(k + "-")), None)
        if match is None:
            raise UserError(f"unknown ablation in {name!r}; accepted suffixes: {', '.join(ABLATIONS)}")
        flags[match] = True
        rest = rest[len(match) + 1 :]
    method = exit_method(
        "ztw",
        cascade_only=flags["cascade-only"],
        ensemble_only=flags["ensemble-only"],
        additive=flags["additive"],
        no_stop_gradient=flags["no-stop-gradient"],
    )
    if method.name != name:
        raise UserError(f"method name {name!r} is not canonical; write it as {method.name!r}")
    return method


#: Plain ZTW: cascade connections, geometric ensembles, stop-gradient on the cascade.
ZTW = ExitMethod("ztw", cascade=True, ensemble="geometric", detach_cascade=True)
#: SDN: independent ICs, no ensembles (PBEE reads these heads with the patience rule).
SDN = ExitMethod("sdn", cascade=False, ensemble=None, detach_cascade=True)
