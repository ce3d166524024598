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
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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


def check_batch(array: np.ndarray, spec: InputSpec, max_items: int) -> np.ndarray:
    """Validate a batch array against ``spec`` (dtype, shape, item count, value range); return it contiguous."""
    if array.dtype != np.dtype(spec.dtype):
        raise PayloadError(f"inputs must have dtype {spec.dtype}, got {array.dtype}; expected {spec.describe()}")
    if array.ndim != 1 + len(spec.shape) or tuple(array.shape[1:]) != spec.shape:
        raise PayloadError(f"inputs must have shape {spec.describe()}, got {tuple(array.shape)}")
    n = array.shape[0]
    if n < 1:
        raise PayloadError("the batch is empty: send at least one item")
    if n > max_items:
        raise PayloadError(f"the batch has {n} items, at most {max_items} are accepted per request", status=413)
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
    """Decode and validate the bytes of a ``.npy`` file; items are named ``0..N-1``."""
    try:
        array = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise PayloadError(f"the body is not a valid .npy array (numpy.save format): {_first_line(exc)}") from None
    if array.dtype.hasobject:
        raise PayloadError(f"object arrays are not accepted; expected {spec.describe()}")
    if array.dtype.byteorder == ">" and array.dtype.newbyteorder("=") == np.dtype(spec.dtype):
        array = array.astype(spec.dtype)  # same numbers, other byte order
    array = check_batch(array, spec, max_items)
    if not array.flags.writeable:
        array = array.copy()
    return DecodedBatch(array, list(range(array.shape[0])))


def decode_json(data: bytes | str, spec: InputSpec, max_items: int, fields: Sequence[str]) -> DecodedBatch:
    """Decode and validate a JSON batch ``{"inputs": ..., "ids": ...?, "batch_id": ...?}`` (only ``fields``)."""
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PayloadError(f"malformed JSON: {_first_line(exc)}") from None
    if not isinstance(obj, dict):
        raise PayloadError(f"the JSON body must be an object with fields {', '.join(fields)}, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise PayloadError(f"unknown field(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(fields)}")
    if "inputs" not in obj:
        raise PayloadError(f"missing field 'inputs' (a nested list shaped {spec.describe()})")
    batch_id = obj.get("batch_id")
    if batch_id is not None and (isinstance(batch_id, bool) or not isinstance(batch_id, (str, int))):
        raise PayloadError(f"batch_id must be a string or an integer, got {json.dumps(batch_id)[:40]}")
    array = _json_array(obj["inputs"], spec)
    array = check_batch(array, spec, max_items)
    ids = obj.get("ids")
    if ids is None:
        ids = list(range(array.shape[0]))
    else:
        ids = _check_ids(ids, array.shape[0])
    return DecodedBatch(array, ids, batch_id)


def _json_array(inputs: Any, spec: InputSpec) -> np.ndarray:
    if not isinstance(inputs, list):
        raise PayloadError(f"'inputs' must be a nested list shaped {spec.describe()}, got {type(inputs).__name__}")
    try:
        # float64 first: checks the structure is rectangular and every leaf a number, without silent wrap-around.
        values = np.asarray(inputs, dtype=np.float64)
    except (ValueError, TypeError):
        raise PayloadError(
            f"'inputs' must be a rectangular nested list of numbers shaped {spec.describe()}"
        ) from None
    if values.ndim != 1 + len(spec.shape) or tuple(values.shape[1:]) != spec.shape:
        raise PayloadError(f"'inputs' must have shape {spec.describe()}, got {tuple(values.shape)}")
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
