"""Wire formats of the inference server: decoding and validating input batches, encoding answers.

A batch is ``(N, *shape)`` items of the served model's :class:`InputSpec` (e.g. ``(N, 4, 84, 84)`` uint8 Atari
observations, ``(N, 3, 32, 32)`` float32 images in [0, 1]). Two encodings are accepted, on HTTP and WebSocket alike:

* **NPY** — the bytes of a ``.npy`` file (``numpy.save``), exact dtype, no pickles. Items are identified by their
  position ``0..N-1``.
* **JSON** — ``{"inputs": <nested lists>, "ids": [...]?, "batch_id": ...?}``; numbers must fit the dtype exactly
  (uint8: integers 0..255). ``ids`` (optional, unique strings or integers, one per item) name the items in the
  answers; by default they are ``0..N-1``. ``batch_id`` (string or integer) is for the WebSocket only.

Every problem is a :class:`PayloadError` whose message says what was wrong and what is accepted; the server sends it
to the client that made the mistake and to no one else.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Fields a JSON batch may hold on ``POST /predict``.
HTTP_JSON_FIELDS = ("inputs", "ids")
#: Fields a JSON batch may hold on ``WS /stream``.
WS_JSON_FIELDS = ("inputs", "ids", "batch_id")
#: The dtypes a served model may take on the wire.
WIRE_DTYPES = ("uint8", "float32")


class PayloadError(ValueError):
    """A client sent a batch the server cannot accept (the message is sent back to that client).

    Attributes:
        status: the HTTP status code that fits (400 malformed/invalid, 413 too large, 415 wrong content type).
        batch_id: the client's batch id when the batch named a valid one before the problem was found, else None
            (so a WebSocket error reply names the batch the client knows).
    """

    def __init__(self, message: str, status: int = 400, batch_id: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.batch_id = batch_id


@dataclass(frozen=True)
class InputSpec:
    """Shape and dtype of one item on the wire, and the range its values must lie in.

    Attributes:
        shape: per-item shape, e.g. ``(4, 84, 84)``.
        dtype: ``"uint8"`` or ``"float32"``.
        low, high: accepted value range (inclusive); uint8 is always 0..255. NaN and infinities are never accepted.
    """

    shape: tuple[int, ...]
    dtype: str
    low: float = -math.inf
    high: float = math.inf

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in shape):
            raise ValueError(f"InputSpec shape must be a non-empty tuple of positive integers, got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        if self.dtype not in WIRE_DTYPES:
            raise ValueError(f"InputSpec dtype must be one of {', '.join(WIRE_DTYPES)}, got {self.dtype!r}")
        if self.dtype == "uint8":
            object.__setattr__(self, "low", max(float(self.low), 0.0))
            object.__setattr__(self, "high", min(float(self.high), 255.0))
        if not self.low <= self.high:
            raise ValueError(f"InputSpec needs low <= high, got {self.low} > {self.high}")

    @property
    def item_bytes(self) -> int:
        """Bytes of one item in NPY encoding."""
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def describe(self) -> str:
        """Human-readable batch format, e.g. ``uint8 (N, 4, 84, 84)``."""
        return f"{self.dtype} (N, {', '.join(map(str, self.shape))})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (for ``GET /health``)."""
        out: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype}
        if math.isfinite(self.low):
            out["low"] = self.low
        if math.isfinite(self.high):
            out["high"] = self.high
        return out


@dataclass(frozen=True)
class DecodedBatch:
    """A validated batch.

    Attributes:
        inputs: ``(N, *spec.shape)`` array of the spec's dtype, C-contiguous and writable.
        ids: the item ids to answer with (``0..N-1`` unless the client named them).
        batch_id: the client's batch id (WebSocket JSON only), or None.
    """

    inputs: np.ndarray
    ids: list[Any]
    batch_id: Any = None


def check_layout(dtype: np.dtype, shape: tuple[int, ...], spec: InputSpec, max_items: int) -> None:
    """Validate a batch's dtype, shape and item count against ``spec`` (no data needed: .npy headers use it)."""
    if dtype != np.dtype(spec.dtype):
        raise PayloadError(f"inputs must have dtype {spec.dtype}, got {dtype}; expected {spec.describe()}")
    if len(shape) != 1 + len(spec.shape) or tuple(shape[1:]) != spec.shape:
        raise PayloadError(f"inputs must have shape {spec.describe()}, got {tuple(shape)}")
    n = shape[0]
    if n < 1:
        raise PayloadError("the batch is empty: send at least one item")
    if n > max_items:
        raise PayloadError(f"the batch has {n} items, at most {max_items} are accepted per request", status=413)


def check_batch(array: np.ndarray, spec: InputSpec, max_items: int) -> np.ndarray:
    """Validate a batch array against ``spec`` (dtype, shape, item count, value range); return it contiguous."""
    check_layout(array.dtype, tuple(array.shape), spec, max_items)
    if spec.dtype != "uint8":
        if not np.isfinite(array).all():
            raise PayloadError("inputs must be finite numbers (no NaN or infinity)")
        lo, hi = float(array.min()), float(array.max())
        if lo < spec.low or hi > spec.high:
            raise PayloadError(
                f"input values must lie in [{spec.low:g}, {spec.high:g}], got values in [{lo:g}, {hi:g}]"
            )
    return np.ascontiguousarray(array)


def decode_npy(data: bytes, spec: InputSpec, max_items: int) -> DecodedBatch:
    """Decode and validate the bytes of a ``.npy`` file; items are named ``0..N-1``.

    The header is checked (dtype, shape, item count, data length) before any array is made, so a header that
    claims a huge shape costs nothing.
    """
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]} (1.0 and 2.0 are)")
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise PayloadError(f"the body is not a valid .npy array (numpy.save format): {_first_line(exc)}") from None
    if dtype.hasobject:
        raise PayloadError(f"object arrays are not accepted; expected {spec.describe()}")
    native = dtype.newbyteorder("=") if dtype.byteorder == ">" else dtype  # same numbers, other byte order
    check_layout(native, tuple(shape), spec, max_items)
    declared, offset = math.prod(shape) * dtype.itemsize, stream.tell()
    if declared != len(data) - offset:
        raise PayloadError(
            f"the body is not a valid .npy array (numpy.save format): its header declares {declared} bytes of "
            f"data, the body holds {len(data) - offset}"
        )
    raw = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape, order="F" if fortran_order else "C")
    # One copy: native byte order, C order, writable (frombuffer's view of the bytes is read-only).
    array = check_batch(np.array(raw, dtype=spec.dtype, order="C"), spec, max_items)
    return DecodedBatch(array, list(range(array.shape[0])))


def decode_json(data: bytes | str, spec: InputSpec, max_items: int, fields: Sequence[str]) -> DecodedBatch:
    """Decode and validate a JSON batch ``{"inputs": ..., "ids": ...?, "batch_id": ...?}`` (only ``fields``)."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:  # also too deep nesting and integers over Python's digit limit
        raise PayloadError(f"malformed JSON: {_first_line(exc)}") from None
    if not isinstance(obj, dict):
        raise PayloadError(f"the JSON body must be an object with fields {', '.join(fields)}, got {type(obj).__name__}")
    batch_id = obj.get("batch_id") if "batch_id" in fields else None
    if batch_id is not None and (isinstance(batch_id, bool) or not isinstance(batch_id, (str, int))):
        raise PayloadError(f"batch_id must be a string or an integer, got {json.dumps(batch_id)[:40]}")
    try:
        unknown = sorted(set(obj) - set(fields))
        if unknown:
            raise PayloadError(f"unknown field(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(fields)}")
        if "inputs" not in obj:
            raise PayloadError(f"missing field 'inputs' (a nested list shaped {spec.describe()})")
        array = _json_array(obj["inputs"], spec)
        array = check_batch(array, spec, max_items)
        ids = obj.get("ids")
        if ids is None:
            ids = list(range(array.shape[0]))
        else:
            ids = _check_ids(ids, array.shape[0])
    except PayloadError as exc:
        exc.batch_id = batch_id
        raise
    return DecodedBatch(array, ids, batch_id)


def _json_array(inputs: Any, spec: InputSpec) -> np.ndarray:
    if not isinstance(inputs, list):
        raise PayloadError(f"'inputs' must be a nested list shaped {spec.describe()}, got {type(inputs).__name__}")
    try:
        # float64 first: checks the structure is rectangular, without silent wrap-around. Huge integers overflow.
        values = np.asarray(inputs, dtype=np.float64)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise PayloadError(
            f"'inputs' must be a rectangular nested list of numbers shaped {spec.describe()}"
        ) from None
    if values.ndim != 1 + len(spec.shape) or tuple(values.shape[1:]) != spec.shape:
        raise PayloadError(f"'inputs' must have shape {spec.describe()}, got {tuple(values.shape)}")
    # numpy turns "0.5" and true into numbers; the leaves are known rectangular now, so flatten them (in C) and check.
    leaves: Any = inputs
    for _ in range(values.ndim - 1):
        leaves = itertools.chain.from_iterable(leaves)
    kinds = set(map(type, leaves))
    if not kinds <= {int, float}:
        got = ", ".join(sorted({str: "string", bool: "boolean"}.get(k, "null") for k in kinds - {int, float}))
        raise PayloadError(f"'inputs' must hold numbers, not strings or booleans; got {got}")
    if not np.isfinite(values).all():
        raise PayloadError("'inputs' must be finite numbers (no NaN or infinity)")
    if spec.dtype == "uint8":
        if values.size and ((values != np.round(values)).any() or values.min() < 0 or values.max() > 255):
            raise PayloadError("'inputs' must be integers in 0..255 for a uint8 model")
        return values.astype(np.uint8)
    return values.astype(np.float32)


def _check_ids(ids: Any, n: int) -> list[Any]:
    if not isinstance(ids, list) or len(ids) != n:
        got = f"a list of {len(ids)}" if isinstance(ids, list) else type(ids).__name__
        raise PayloadError(f"'ids' must be a list of {n} unique strings or integers (one per item), got {got}")
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise PayloadError(f"'ids' must hold strings or integers, got {json.dumps(value)[:40]}")
    if len(set(ids)) != n:
        raise PayloadError("'ids' must be unique within a batch")
    return ids


def encode_npy(array: np.ndarray) -> bytes:
    """The ``.npy`` bytes of ``array`` (what a client sends)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
