"""state_dict_sha256: the same weights give the same hash whatever their device, layout or container; file_sha256."""

from __future__ import annotations

import hashlib

import torch

from ee_rl.core.fingerprint import file_sha256, state_dict_sha256


def test_hash_of_a_one_tensor_state_dict_by_hand() -> None:
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    expected = hashlib.sha256(b"w" + b"torch.float32" + w.numpy().tobytes()).hexdigest()
    assert state_dict_sha256({"w": w}) == expected


def test_layout_and_key_order_do_not_count_but_values_names_and_dtypes_do() -> None:
    conv = torch.nn.Conv2d(4, 8, 3)
    plain = conv.state_dict()
    channels_last = {k: v.to(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in plain.items()}
    reordered = dict(reversed(list(plain.items())))
    reference = state_dict_sha256(plain)
    assert state_dict_sha256(channels_last) == reference == state_dict_sha256(reordered)
    nudged = {**plain, "bias": plain["bias"] + 1e-6}
    renamed = {("b" if k == "bias" else k): v for k, v in plain.items()}
    doubled = {k: v.double() for k, v in plain.items()}
    assert len({reference, *map(state_dict_sha256, (nudged, renamed, doubled))}) == 4


def test_file_sha256_reads_in_blocks_and_equals_the_bytes_hash(tmp_path):
    data = bytes(range(256)) * 5000  # 1.28 MB: more than one 1 MiB block
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(data[:-1] + b"\x00")
    assert file_sha256(path) != hashlib.sha256(data).hexdigest()
