"""Wire formats: NPY and JSON batches decode to exactly the array sent; every malformed batch is a PayloadError."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from ee_rl.serve.codecs import (
    HTTP_JSON_FIELDS,
    WS_JSON_FIELDS,
    InputSpec,
    PayloadError,
    decode_json,
    decode_npy,
    encode_npy,
)

U8 = InputSpec((2, 3), "uint8")
F32 = InputSpec((2,), "float32", low=0.0, high=1.0)


def _batch(n: int = 3) -> np.ndarray:
    return np.arange(n * 6, dtype=np.uint8).reshape(n, 2, 3)


def test_npy_round_trip_is_exact_and_names_items_by_position() -> None:
    x = _batch()
    out = decode_npy(encode_npy(x), U8, max_items=8)
    assert np.array_equal(out.inputs, x) and out.inputs.dtype == np.uint8
    assert out.ids == [0, 1, 2] and out.batch_id is None
    assert out.inputs.flags.writeable and out.inputs.flags.c_contiguous


def test_npy_big_endian_and_fortran_order_are_the_same_numbers() -> None:
    x = np.linspace(0, 1, 8, dtype=np.float32).reshape(4, 2)
    assert np.array_equal(decode_npy(encode_npy(x.astype(">f4")), F32, 8).inputs, x)
    buffer = io.BytesIO()
    np.save(buffer, np.asfortranarray(_batch()))
    assert np.array_equal(decode_npy(buffer.getvalue(), U8, 8).inputs, _batch())


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        (encode_npy(_batch().astype(np.int16)), 400, "dtype uint8"),
        (encode_npy(_batch()[:, :, :2]), 400, "shape uint8 (N, 2, 3)"),
        (encode_npy(np.zeros((0, 2, 3), np.uint8)), 400, "empty"),
        (encode_npy(_batch(9)), 413, "at most 8"),
        (b"not an npy file", 400, ".npy"),
        (encode_npy(_batch())[:-5], 400, ".npy"),
    ],
)
def test_bad_npy_is_rejected_with_a_clear_message(payload: bytes, status: int, words: str) -> None:
    with pytest.raises(PayloadError, match=None) as info:
        decode_npy(payload, U8, max_items=8)
    assert info.value.status == status and words in str(info.value)


def test_pickled_object_arrays_are_refused() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(PayloadError):
        decode_npy(buffer.getvalue(), U8, 8)


def test_json_batch_with_ids_and_batch_id() -> None:
    x = _batch(2)
    body = json.dumps({"inputs": x.tolist(), "ids": ["a", 7], "batch_id": "b1"})
    out = decode_json(body, U8, 8, WS_JSON_FIELDS)
    assert np.array_equal(out.inputs, x) and out.ids == ["a", 7] and out.batch_id == "b1"
    assert decode_json(json.dumps({"inputs": x.tolist()}), U8, 8, HTTP_JSON_FIELDS).ids == [0, 1]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("{bad json", "malformed JSON"),
        ("[1, 2]", "must be an object"),
        ('{"inputs": [], "extra": 1}', "unknown field(s) 'extra'"),
        ('{"ids": [0]}', "missing field 'inputs'"),
        ('{"inputs": 5}', "nested list"),
        ('{"inputs": [[[1, 2, 3], [4, 5]]]}', "rectangular"),
        ('{"inputs": [[[1, 2, 3], [4, 5, "x"]]]}', "rectangular"),
        ('{"inputs": [[[1, 2, 3], [4, 5, 256]]]}', "integers in 0..255"),
        ('{"inputs": [[[1, 2, 3], [4, 5, 1.5]]]}', "integers in 0..255"),
        ('{"inputs": [[[1, 2, 3], [4, 5, -1]]]}', "integers in 0..255"),
        ('{"inputs": [[[1, 2, 3], [4, 5, NaN]]]}', "finite"),
        ('{"inputs": [[1, 2, 3]]}', "shape uint8 (N, 2, 3)"),
        ('{"inputs": []}', "shape"),
        ('{"inputs": [[[1, 2, 3], [4, 5, 6]]], "ids": [1, 2]}', "list of 1"),
        ('{"inputs": [[[1, 2, 3], [4, 5, 6]]], "ids": [[1]]}', "strings or integers"),
        ('{"inputs": [[[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 5, 6]]], "ids": [1, 1]}', "unique"),
    ],
)
def test_bad_json_is_rejected_with_a_clear_message(body: str, words: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode_json(body, U8, 8, HTTP_JSON_FIELDS)
    assert words in str(info.value) and info.value.status == 400


def test_batch_id_only_on_the_websocket_and_must_be_a_string_or_int() -> None:
    body = {"inputs": _batch(1).tolist(), "batch_id": 3}
    with pytest.raises(PayloadError, match="unknown field"):
        decode_json(json.dumps(body), U8, 8, HTTP_JSON_FIELDS)
    with pytest.raises(PayloadError, match="batch_id"):
        decode_json(json.dumps({**body, "batch_id": [1]}), U8, 8, WS_JSON_FIELDS)


def test_float_spec_checks_range_and_finiteness() -> None:
    ok = np.array([[0.0, 1.0], [0.5, 0.25]], dtype=np.float32)
    assert np.array_equal(decode_npy(encode_npy(ok), F32, 8).inputs, ok)
    with pytest.raises(PayloadError, match=r"\[0, 1\]"):
        decode_npy(encode_npy(ok + 0.5), F32, 8)
    with pytest.raises(PayloadError, match="finite"):
        decode_npy(encode_npy(np.array([[math.inf, 0]], dtype=np.float32)), F32, 8)


def test_input_spec_validation_and_description() -> None:
    assert U8.describe() == "uint8 (N, 2, 3)" and U8.item_bytes == 6
    assert U8.to_dict() == {"shape": [2, 3], "dtype": "uint8", "low": 0.0, "high": 255.0}
    for bad in [dict(shape=(), dtype="uint8"), dict(shape=(2, 0), dtype="uint8"), dict(shape=(2,), dtype="int64")]:
        with pytest.raises(ValueError):
            InputSpec(**bad)
