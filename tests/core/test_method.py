"""ExitMethod: ZTW, SDN and the appendix-C ablations, their flags, names and stored dicts."""

from __future__ import annotations

import itertools

import pytest

from ee_rl.core.method import SDN, ZTW, ExitMethod, exit_method, method_by_name
from ee_rl.errors import UserError

# (flags, cascade, ensemble, detach_cascade, name) for every valid combination of the ZTW ablation flags.
VALID_ZTW = [
    ({}, True, "geometric", True, "ztw"),
    ({"cascade_only": True}, True, None, True, "ztw-cascade-only"),
    ({"ensemble_only": True}, False, "geometric", True, "ztw-ensemble-only"),
    ({"additive": True}, True, "additive", True, "ztw-additive"),
    ({"no_stop_gradient": True}, True, "geometric", False, "ztw-no-stop-gradient"),
    ({"ensemble_only": True, "additive": True}, False, "additive", True, "ztw-ensemble-only-additive"),
    ({"cascade_only": True, "no_stop_gradient": True}, True, None, False, "ztw-cascade-only-no-stop-gradient"),
    ({"additive": True, "no_stop_gradient": True}, True, "additive", False, "ztw-additive-no-stop-gradient"),
]


@pytest.mark.parametrize(("flags", "cascade", "ensemble", "detach", "name"), VALID_ZTW, ids=[v[-1] for v in VALID_ZTW])
def test_ablation_flags_give_the_paper_wiring_and_name(flags, cascade, ensemble, detach, name) -> None:
    method = exit_method("ztw", **flags)
    assert (method.method, method.cascade, method.ensemble, method.detach_cascade) == ("ztw", cascade, ensemble, detach)
    assert method.name == name
    assert method_by_name(name) == method


def test_plain_methods_are_the_module_constants() -> None:
    assert exit_method("ztw") == ZTW and ZTW.name == "ztw"
    assert exit_method("sdn") == SDN and SDN.name == "sdn"
    assert (SDN.cascade, SDN.ensemble) == (False, None)
    assert method_by_name("sdn") == SDN


def test_there_are_exactly_eight_ztw_variants() -> None:
    names = set()
    for on in itertools.product((False, True), repeat=4):
        flags = dict(zip(("cascade_only", "ensemble_only", "additive", "no_stop_gradient"), on))
        try:
            names.add(exit_method("ztw", **flags).name)
        except UserError:
            continue
    assert names == {v[-1] for v in VALID_ZTW}


@pytest.mark.parametrize(
    ("method", "flags", "message"),
    [
        ("sdn", {"additive": True}, "--additive are ablations of ztw"),
        ("sdn", {"cascade_only": True, "no_stop_gradient": True}, "--cascade-only, --no-stop-gradient are ablations"),
        ("ztw", {"cascade_only": True, "ensemble_only": True}, "exclude each other"),
        ("ztw", {"cascade_only": True, "additive": True}, "--cascade-only removes them"),
        ("ztw", {"ensemble_only": True, "no_stop_gradient": True}, "--ensemble-only removes them"),
        ("pbee", {}, "--method must be one of ztw, sdn, got 'pbee'"),
    ],
)
def test_invalid_flag_combinations_are_one_line_user_errors(method, flags, message) -> None:
    with pytest.raises(UserError, match=message) as info:
        exit_method(method, **flags)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": "pbee"}, "method must be one of"),
        ({"ensemble": "median"}, "ensemble must be one of"),
        ({"method": "sdn", "cascade": True, "ensemble": None}, "apply to --method ztw only"),
        ({"cascade": False, "ensemble": None}, "is sdn"),
        ({"cascade": False, "detach_cascade": False}, "needs cascade connections"),
    ],
)
def test_inconsistent_fields_are_refused(fields, message) -> None:
    with pytest.raises(UserError, match=message):
        ExitMethod(**fields)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("pbee", "unknown method"),
        ("ztw-fast", "unknown ablation"),
        ("ztw-additive-ensemble-only", "not canonical; write it as 'ztw-ensemble-only-additive'"),
        ("ztw-cascade-only-additive", "--cascade-only removes them"),
    ],
)
def test_method_by_name_accepts_only_canonical_names(name, message) -> None:
    with pytest.raises(UserError, match=message):
        method_by_name(name)


@pytest.mark.parametrize("method", [SDN, *(exit_method("ztw", **v[0]) for v in VALID_ZTW)], ids=lambda m: m.name)
def test_dict_round_trip(method) -> None:
    stored = method.to_dict()
    assert set(stored) == {"method", "cascade", "ensemble", "detach_cascade"}
    assert ExitMethod.from_dict(stored) == method


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ({"cascade": True, "ensemble": "geometric", "detach_cascade": True}, ZTW),
        ({"cascade": False, "ensemble": None, "detach_cascade": True}, SDN),
        ({"cascade": False, "ensemble": "additive"}, exit_method("ztw", ensemble_only=True, additive=True)),
        ({"cascade": True, "ensemble": None, "detach_cascade": False},
         exit_method("ztw", cascade_only=True, no_stop_gradient=True)),
    ],
)
def test_from_dict_reads_the_older_vision_variant_dicts(stored, expected) -> None:
    """Vision exit files written before the one ExitMethod stored no ``method`` (and first no ``detach_cascade``)."""
    assert ExitMethod.from_dict(stored) == expected
