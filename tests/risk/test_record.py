"""Exit records: saved and read back exactly; a bad file is a one-line error; the digits-noisy pool is disjoint
from what trained the backbone."""

from __future__ import annotations

import torch
import pytest

from ee_rl.errors import UserError
from ee_rl.risk.record import DIGITS_HEAD_IMAGES, ExitRecord, digits_pool_size
from ee_rl.vision.data import digits_noisy_left_out, load_dataset
from tests.risk.test_experiment import synthetic_record


def test_record_round_trips(tmp_path) -> None:
    record = synthetic_record(n=50)
    path = record.save(tmp_path / "r.pt")
    back = ExitRecord.load(path)
    assert back.costs == record.costs and back.info == record.info and back.name == "synthetic"
    assert torch.equal(back.ic_logits, record.ic_logits) and torch.equal(back.labels, record.labels)
    torch.testing.assert_close(back.outputs().ic_log_probs, torch.log_softmax(record.ic_logits, dim=-1))
    (tmp_path / "bad.pt").write_bytes(b"not a record")
    with pytest.raises(UserError, match="cannot read the exit record"):
        ExitRecord.load(tmp_path / "bad.pt")


def test_digits_noisy_left_out_images_are_neither_training_nor_test_images() -> None:
    data = load_dataset("digits-noisy", seed=0)
    left = digits_noisy_left_out(0)
    seen = {x.numpy().tobytes() for x in torch.cat([data.train.images, data.test.images])}
    assert len(left.labels) == 719 and not any(x.numpy().tobytes() in seen for x in left.images)
    # Together they are the whole dataset.
    assert len(left.labels) + len(data.train.labels) + len(data.test.labels) == 1797
    assert digits_pool_size(0) == 719 - DIGITS_HEAD_IMAGES + 719
