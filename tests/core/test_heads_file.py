"""The heads file: write, read with weights_only=True, refuse foreign files, read older layouts and shipped files."""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np
import pytest
import torch

from ee_rl.core import EarlyExitModel
from ee_rl.core.builder import build_early_exit_model
from ee_rl.core.heads_file import (
    HEADS_FORMAT,
    heads_payload,
    load_heads_state,
    read_heads_file,
    write_heads_file,
)
from ee_rl.core.method import SDN, ZTW, ExitMethod, exit_method
from ee_rl.errors import UserError
from tests.core.builders import INPUT_SHAPE, NUM_CLASSES, ROOT, make_tiny_backbone, random_images

ATTACH_AFTER = (0, 1, 2)


def fresh(method: ExitMethod, seed: int) -> EarlyExitModel:
    return build_early_exit_model(
        make_tiny_backbone(), method, num_classes=NUM_CLASSES, attach_after=ATTACH_AFTER,
        sample=torch.zeros((1, *INPUT_SHAPE)), stride=2, seed=seed,
    ).eval()


def trained(method: ExitMethod = ZTW) -> EarlyExitModel:
    """A model whose heads and ensembles are not at their initial values (so loading them is checked)."""
    model = fresh(method, seed=1)
    if model.ensembles is not None:
        with torch.no_grad():
            for e in model.ensembles:
                e.log_w.uniform_(-1.0, 0.5)
                e.log_b.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("method", [ZTW, SDN, exit_method("ztw", ensemble_only=True, additive=True)],
                         ids=lambda m: m.name)
def test_round_trip_reproduces_every_exit(tmp_path: Path, method: ExitMethod) -> None:
    model = trained(method)
    fields = {"backbone_sha256": "ab" * 32, "config": {"lr": 1e-3, "milestones": (15, 30)}, "seeds": [1, 2]}
    path = write_heads_file(tmp_path / "sub" / "exits.pt", heads_payload(model, method, fields))
    assert [p.name for p in path.parent.iterdir()] == ["exits.pt"]  # atomic: no temporary file left behind
    payload = read_heads_file(path, required=("backbone_sha256",))
    assert ExitMethod.from_dict(payload["method"]) == method and payload["attach_after"] == list(ATTACH_AFTER)
    assert {k: payload[k] for k in fields} == fields
    loaded = fresh(method, seed=2)  # other random heads, replaced by the file's
    load_heads_state(loaded, payload, path, "the tiny heads")
    x = random_images(6)
    with torch.no_grad():
        assert torch.equal(loaded.all_exits(x).answer_log_probs, model.all_exits(x).answer_log_probs)


def test_file_is_plain_tensors_and_values_loadable_with_weights_only(tmp_path: Path) -> None:
    model = trained()
    path = write_heads_file(tmp_path / "exits.pt", heads_payload(model, ZTW, {"seed": 3}))
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert (raw["format"], raw["version"], raw["seed"]) == (HEADS_FORMAT, 1, 3)
    assert raw["method"] == {"method": "ztw", "cascade": True, "ensemble": "geometric", "detach_cascade": True}
    assert raw["heads"].keys() == model.heads.state_dict().keys()


def test_payload_is_a_snapshot_not_a_view_of_the_live_parameters() -> None:
    model = trained()
    payload = heads_payload(model, ZTW, {})
    before = payload["heads"]["0.linear.weight"].clone()
    with torch.no_grad():
        model.heads[0].linear.weight.add_(1.0)
    assert torch.equal(payload["heads"]["0.linear.weight"], before)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"score": np.float64(0.5)}, r"fields\.score is a float64"),
        ({"config": {"ratio": fractions.Fraction(1, 3)}}, r"fields\.config\.ratio is a Fraction"),
        ({"runs": [{"path": Path("x")}]}, r"fields\.runs\[0\]\.path is a PosixPath"),
        ({"by_seed": {np.int64(1): 0.5}}, "by_seed has a key of type int64"),
        ({"heads": {}}, r"\['heads'\] are reserved"),
    ],
)
def test_fields_that_would_not_load_with_weights_only_are_refused_when_writing(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        heads_payload(trained(), ZTW, fields)


def test_missing_corrupt_and_foreign_files_are_one_line_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="vision heads not found"):
        read_heads_file(tmp_path / "missing.pt", what="vision heads")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="is corrupt or not a torch file"):
        read_heads_file(tmp_path / "junk.pt")
    # A pickled object weights_only refuses to build: the file is refused without running its code.
    torch.save({"format": HEADS_FORMAT, "version": 1, "x": fractions.Fraction(1, 3)}, tmp_path / "unsafe.pt")
    with pytest.raises(UserError, match="corrupt or not a torch file: UnpicklingError"):
        read_heads_file(tmp_path / "unsafe.pt")
    for name, obj in (("list.pt", [1, 2]), ("state.pt", trained().heads.state_dict())):
        torch.save(obj, tmp_path / name)
        with pytest.raises(UserError, match="is not an ee_rl heads file"):
            read_heads_file(tmp_path / name)
    payload = heads_payload(trained(), ZTW, {})
    write_heads_file(tmp_path / "v2.pt", {**payload, "version": 2})
    with pytest.raises(UserError, match="has format version 2, this ee_rl reads 1"):
        read_heads_file(tmp_path / "v2.pt")
    write_heads_file(tmp_path / "other.pt", payload)
    with pytest.raises(UserError, match="another kind, not a heads file \\(it lacks expert_sha256\\)"):
        read_heads_file(tmp_path / "other.pt", required=("expert_sha256",))


def test_heads_of_another_method_do_not_fit(tmp_path: Path) -> None:
    path = write_heads_file(tmp_path / "sdn.pt", heads_payload(trained(SDN), SDN, {}))
    with pytest.raises(UserError, match=r"sdn\.pt does not fit the ztw heads \(.*\); retrain it") as info:
        load_heads_state(fresh(ZTW, seed=0), read_heads_file(path), path, "the ztw heads")
    assert "\n" not in str(info.value)
    ens = fresh(ZTW, seed=0)
    with pytest.raises(UserError, match="does not fit the ztw heads \\(ensembles\\)"):
        load_heads_state(ens, {**heads_payload(ens, ZTW, {}), "ensembles": None}, path, "the ztw heads")


def test_older_vision_exit_files_are_read_in_the_current_layout(tmp_path: Path) -> None:
    """Vision files written before the one format: ``kind`` and ``variant`` (no ``method``), no version."""
    method = exit_method("ztw", additive=True)
    model = trained(method)
    old = {
        "kind": "ee_rl.vision.exits",
        "variant": {"cascade": True, "ensemble": "additive", "detach_cascade": True},
        "backbone_sha256": "cd" * 32, "arch": "small_cnn", "dataset": "digits", "num_classes": NUM_CLASSES,
        "attach_after": list(ATTACH_AFTER),
        "heads": model.heads.state_dict(), "ensembles": model.ensembles.state_dict(),
        "seed": 0, "ic_downsample": False,
    }
    torch.save(old, tmp_path / "exits-ztw-additive.pt")
    payload = read_heads_file(tmp_path / "exits-ztw-additive.pt", required=("backbone_sha256", "dataset"))
    assert (payload["format"], payload["version"]) == (HEADS_FORMAT, 1)
    assert ExitMethod.from_dict(payload["method"]) == method and "kind" not in payload and "variant" not in payload
    assert (payload["dataset"], payload["seed"], payload["ic_downsample"]) == ("digits", 0, False)
    loaded = fresh(method, seed=5)
    load_heads_state(loaded, payload, "old file", "the heads")
    x = random_images(4)
    with torch.no_grad():
        assert torch.equal(loaded.all_exits(x).answer_log_probs, model.all_exits(x).answer_log_probs)


@pytest.mark.parametrize("name", ["ztw", "sdn"])
def test_shipped_pong_heads_files_still_load(name: str) -> None:
    """``agents/Pong/exits-<name>.pt`` (written by the RL code before the one format) read and fit a NatureCNN
    early-exit model built by the core builder from what the file records."""
    from ee_rl.rl.policy import build_nature_cnn_early_exit

    path = ROOT / "agents" / "Pong" / f"exits-{name}.pt"
    payload = read_heads_file(path, required=("game", "expert_sha256", "num_actions", "ic_stride", "pool_size"))
    method = ExitMethod.from_dict(payload["method"])
    assert method.name == name and payload["game"] == "pong" and payload["num_actions"] == 6
    assert payload["attach_after"] == [0, 1] and (payload["ensembles"] is None) == (name == "sdn")
    random_expert, _ = build_nature_cnn_early_exit(payload["num_actions"])
    model = build_early_exit_model(
        random_expert.backbone, method, num_classes=payload["num_actions"], attach_after=payload["attach_after"],
        sample=torch.zeros((1, *payload["obs_shape"]), dtype=torch.uint8), stride=payload["ic_stride"],
        pool_size=payload["pool_size"],
    )
    load_heads_state(model, payload, path, f"the {name} heads")
    state = model.heads.state_dict()
    assert all(torch.equal(state[k], v) for k, v in payload["heads"].items())
