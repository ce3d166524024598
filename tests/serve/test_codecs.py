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


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        (_npy_header((10**9, 2)) + b"\0" * 16, 413, "at most 8"),  # read_array would allocate 8 GB first
        (_npy_header((4, 2)) + b"\0" * 16, 400, "declares 32 bytes of data"),
        (_npy_header((4, 2)) + b"\0" * 48, 400, "declares 32 bytes of data"),
        (_npy_header((4, 3)) + b"\0" * 48, 400, "shape float32 (N, 2)"),
        (_npy_header((4, 2), "<f8") + b"\0" * 64, 400, "dtype float32"),
        (_npy_header((4, 2), "|O") + b"\0" * 64, 400, "object arrays"),
    ],
)
def test_npy_header_is_checked_before_the_data_is_read(payload: bytes, status: int, words: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode_npy(payload, F32, max_items=8)
    assert info.value.status == status and words in str(info.value)


def test_npy_version_2_header_is_read() -> None:
    x = np.linspace(0, 1, 8, dtype=np.float32).reshape(4, 2)
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, x, version=(2, 0))
    assert np.array_equal(decode_npy(buffer.getvalue(), F32, 8).inputs, x)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("[" * 100_000, "malformed JSON"),  # RecursionError inside json.loads
        ('{"inputs": [[[' + "9" * 5000 + "]]]}", "malformed JSON"),  # int digit limit: a ValueError
        ('{"inputs": [[[1, 2, ' + "9" * 400 + "], [4, 5, 6]]]}", "rectangular nested list of numbers"),  # overflow
        ('{"inputs": [[[1, 2, 3], [4, 5, "6"]]]}', "numbers, not strings or booleans"),
        ('{"inputs": [[[1, 2, 3], [4, 5, true]]]}', "numbers, not strings or booleans"),
        ('{"inputs": [[["1", "2", "3"], ["4", "5", "6"]]]}', "numbers, not strings or booleans"),
    ],
)
def test_json_the_parser_or_numpy_chokes_on_is_a_payload_error(body: str, words: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode_json(body, U8, 8, HTTP_JSON_FIELDS)
    assert words in str(info.value) and info.value.status == 400


def test_errors_after_a_valid_batch_id_carry_it() -> None:
    bad_shape = {"batch_id": "mine", "inputs": [[1, 2, 3]]}
    with pytest.raises(PayloadError, match="shape") as info:
        decode_json(json.dumps(bad_shape), U8, 8, WS_JSON_FIELDS)
    assert info.value.batch_id == "mine"
    with pytest.raises(PayloadError, match="unknown field") as info:
        decode_json(json.dumps({**bad_shape, "batch_id": 7, "colour": 1}), U8, 8, WS_JSON_FIELDS)
    assert info.value.batch_id == 7
    with pytest.raises(PayloadError, match="batch_id must be") as info:
        decode_json(json.dumps({**bad_shape, "batch_id": [1]}), U8, 8, WS_JSON_FIELDS)
    assert info.value.batch_id is None
