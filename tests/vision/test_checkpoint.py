"""ee_rl.vision.checkpoint.load_torch: user-given checkpoints load with weights_only=True, never running code."""

from __future__ import annotations

import pytest
import torch

from ee_rl.errors import UserError
from ee_rl.vision.checkpoint import load_torch, save_torch


class Payload:
    """A pickled object whose unpickling would run code (here: only flag that it ran)."""

    ran = False

    def __reduce__(self):
        return (Payload._mark, ())

    @staticmethod
    def _mark() -> Payload:
        Payload.ran = True
        return Payload()


def test_plain_records_round_trip(tmp_path) -> None:
    record = {"kind": "backbone", "state_dict": {"w": torch.arange(3.0)}, "mean": [0.5], "seed": 1, "arch": "x"}
    loaded = load_torch(save_torch(tmp_path / "b.pt", record), "backbone checkpoint")
    assert loaded.keys() == record.keys() and torch.equal(loaded["state_dict"]["w"], record["state_dict"]["w"])


def test_a_file_that_would_run_code_is_refused_without_running_it(tmp_path) -> None:
    torch.save({"kind": "backbone", "evil": Payload()}, tmp_path / "evil.pt")
    Payload.ran = False
    with pytest.raises(UserError, match="cannot read backbone checkpoint .*evil.pt"):
        load_torch(tmp_path / "evil.pt", "backbone checkpoint")
    assert not Payload.ran
