"""The real server (uvicorn on a free loopback port) with real clients: httpx for HTTP, websockets for /stream.

A gate on the tiny model's second stage lets a test hold the batch right after IC 1 (exit 0): the IC-1 answers must
already have reached the client while the other items cannot have been computed yet.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import ee_rl.serve.app as app_module
from ee_rl.serve import ServedModel, ServerThread, ServeSettings, create_app, encode_npy
from tests.serve.conftest import N_ITEMS, make_tiny_served, tiny_inputs

SETTINGS = ServeSettings(max_batch=64, max_wait_ms=2.0, max_items=32, max_body_bytes=512 * 1024)
TIMEOUT = 30.0


class Gate:
    """Blocks the model's second stage while armed (at most ``TIMEOUT`` s, so a failing test cannot hang)."""

    def __init__(self) -> None:
        self.armed = False
        self.opened = threading.Event()

    def __call__(self, module, args) -> None:
        if self.armed:
            self.opened.wait(TIMEOUT)

    def arm(self) -> None:
        self.opened.clear()
        self.armed = True

    def release(self) -> None:
        self.armed = False
        self.opened.set()


@pytest.fixture(scope="module")
def served() -> ServedModel:
    return make_tiny_served()


@pytest.fixture(scope="module")
def gate(served: ServedModel) -> Gate:
    gate = Gate()
    served.model.backbone.stages[1].register_forward_pre_hook(gate)
    return gate


@pytest.fixture(scope="module")
def server(served: ServedModel, gate: Gate) -> Iterator[ServerThread]:
    with ServerThread(create_app(served, SETTINGS)) as running:
        yield running


@pytest.fixture()
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture(autouse=True)
def open_gate(gate: Gate) -> Iterator[None]:
    yield
    gate.release()


@pytest.fixture(scope="module")
def expected(served: ServedModel) -> dict[str, np.ndarray]:
    out = served.offline_answers(tiny_inputs())
    assert set(out["exit_index"].tolist()) == {0, 3}
    return out


def _check_answer(answer: dict, expected: dict[str, np.ndarray], i: int) -> None:
    assert answer["class"] == expected["labels"][i]
    assert answer["exit"] == expected["exit_index"][i]
    assert answer["flops_fraction"] == pytest.approx(expected["flops_fraction"][i], rel=1e-12)
    np.testing.assert_allclose(answer["probs"], expected["probs"][i], atol=1e-5)


def _metrics(http: httpx.Client) -> dict:
    return http.get("/metrics").json()


# --- HTTP --------------------------------------------------------------------------------------------------------


def test_health_describes_the_model_and_limits(http: httpx.Client) -> None:
    health = http.get("/health").json()
    assert health["status"] == "ok"
    assert health["model"]["input"] == {"shape": [3, 16, 16], "dtype": "float32"}
    assert health["model"]["num_exits"] == 4 and health["model"]["label"] == "class"
    assert health["limits"]["max_items"] == 32 and health["batching"]["max_batch"] == 64


def test_predict_npy_and_json_answer_like_the_offline_model(http: httpx.Client, expected) -> None:
    x = tiny_inputs()
    r = http.post("/predict", content=encode_npy(x), headers={"content-type": "application/x-npy"})
    assert r.status_code == 200, r.text
    answers = r.json()["answers"]
    assert [a["id"] for a in answers] == list(range(N_ITEMS))
    for i, a in enumerate(answers):
        _check_answer(a, expected, i)
    ids = [f"item-{i}" for i in range(3)]
    r = http.post("/predict", json={"inputs": x[5:8].tolist(), "ids": ids})
    assert r.status_code == 200, r.text
    assert [a["id"] for a in r.json()["answers"]] == ids
    for i, a in zip(range(5, 8), r.json()["answers"]):
        _check_answer(a, expected, i)


def test_predict_rejects_bad_requests_clearly_and_keeps_serving(http: httpx.Client, expected) -> None:
    x = tiny_inputs()
    npy = {"content-type": "application/x-npy"}
    cases = [
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, "malformed JSON"),
        (dict(json={"inputs": x[:1].tolist(), "batch": 1}), 400, "unknown field(s) 'batch'"),
        (dict(json={"inputs": x[:1, :2].tolist()}), 400, "shape float32 (N, 3, 16, 16)"),
        (dict(content=encode_npy(x.astype(np.float64)), headers=npy), 400, "dtype float32"),
        (dict(content=encode_npy(x[:, :, :8]), headers=npy), 400, "shape float32 (N, 3, 16, 16)"),
        (dict(content=encode_npy(np.concatenate([x, x, x])[:33]), headers=npy), 413, "at most 32"),
        (dict(content=b"\0" * (SETTINGS.max_body_bytes + 1), headers=npy), 413, "bytes"),
        (dict(content=encode_npy(x), headers={"content-type": "text/plain"}), 415, "Content-Type"),
        (dict(content=b"garbage", headers=npy), 400, ".npy"),
    ]
    rejected = _metrics(http)["requests"]["rejected"]
    for kwargs, status, words in cases:
        r = http.post("/predict", **kwargs)
        assert r.status_code == status, (words, r.text)
        assert words in r.json()["error"]
    assert _metrics(http)["requests"]["rejected"] == rejected + len(cases)
    r = http.post("/predict", content=encode_npy(x[:2]), headers=npy)
    assert r.status_code == 200
    _check_answer(r.json()["answers"][1], expected, 1)


#: JSON bodies that once escaped the codec as RecursionError / ValueError / OverflowError (HTTP 500, dropped socket).
PARSER_BREAKERS = [
    "[" * 100_000,
    '{"inputs": [' + "9" * 5000 + "]}",
    '{"inputs": [' + "9" * 400 + "]}",
]


def test_predict_answers_json_that_breaks_the_parser_with_a_400(http: httpx.Client) -> None:
    for body in PARSER_BREAKERS:
        r = http.post("/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
    # A header claiming 10**9 items with 16 bytes of data: refused before anything is allocated (was a MemoryError).
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 3, 16, 16)})
    r = http.post("/predict", content=header.getvalue() + b"\0" * 16, headers={"content-type": "application/x-npy"})
    assert r.status_code == 413 and "at most 32" in r.json()["error"]


# --- WebSocket ---------------------------------------------------------------------------------------------------


def _receive_batch(ws, batch_id) -> list[dict]:
    """Messages of one batch up to and including its end (or error) message."""
    messages = []
    while True:
        message = json.loads(ws.recv(timeout=TIMEOUT))
        assert message["batch_id"] == batch_id
        messages.append(message)
        if message["type"] in ("end", "error"):
            return messages


def test_stream_answers_each_item_once_then_ends(server: ServerThread, expected) -> None:
    x = tiny_inputs()
    with connect(server.ws_url) as ws:
        ws.send(encode_npy(x))  # binary: batch_id = message counter (0), ids = positions
        messages = _receive_batch(ws, 0)
        assert messages[-1] == {"type": "end", "batch_id": 0, "items": N_ITEMS}
        answers = messages[:-1]
        assert sorted(a["id"] for a in answers) == list(range(N_ITEMS))
        for a in answers:
            assert a["type"] == "answer"
            _check_answer(a, expected, a["id"])
        exits = [a["exit"] for a in answers]
        assert exits == sorted(exits), "IC-1 answers first"
        ws.send(json.dumps({"inputs": x[:3].tolist(), "ids": ["a", "b", "c"], "batch_id": "mine"}))
        messages = _receive_batch(ws, "mine")
        assert sorted(m["id"] for m in messages[:-1]) == ["a", "b", "c"] and messages[-1]["type"] == "end"


def test_ic1_answers_arrive_while_the_rest_of_the_batch_is_still_held(server, gate: Gate, expected) -> None:
    early = int((expected["exit_index"] == 0).sum())
    assert 0 < early < N_ITEMS
    gate.arm()
    with connect(server.ws_url) as ws:
        ws.send(encode_npy(tiny_inputs()))
        first = [json.loads(ws.recv(timeout=TIMEOUT)) for _ in range(early)]
        assert all(m["type"] == "answer" and m["exit"] == 0 for m in first)
        assert sorted(m["id"] for m in first) == np.flatnonzero(expected["exit_index"] == 0).tolist()
        with pytest.raises(TimeoutError):  # nothing else can come: stage 2 has not run for the other items
            ws.recv(timeout=0.3)
        gate.release()
        rest = _receive_batch(ws, 0)
    assert rest[-1]["type"] == "end"
    assert sorted(m["id"] for m in rest[:-1]) == np.flatnonzero(expected["exit_index"] == 3).tolist()
    for m in first + rest[:-1]:
        _check_answer(m, expected, m["id"])


def test_bad_messages_get_an_error_and_the_connection_stays_usable(server: ServerThread, gate: Gate, expected) -> None:
    x = tiny_inputs()
    with connect(server.ws_url) as ws:
        ws.send(b"not npy")
        assert _receive_batch(ws, 0)[0]["error"].startswith("the body is not a valid .npy")
        ws.send(json.dumps({"inputs": x[:1].tolist(), "colour": "red"}))
        assert "unknown field(s) 'colour'" in _receive_batch(ws, 1)[0]["error"]
        ws.send("{")
        assert "malformed JSON" in _receive_batch(ws, 2)[0]["error"]
        ws.send(encode_npy(x[:, :1]))
        assert "shape float32 (N, 3, 16, 16)" in _receive_batch(ws, 3)[0]["error"]
        ws.send(b"\0" * (SETTINGS.max_body_bytes + 10))
        assert "at most" in _receive_batch(ws, 4)[0]["error"]
        gate.arm()  # hold batch "x" in flight
        ws.send(json.dumps({"inputs": x.tolist(), "batch_id": "x"}))
        first = json.loads(ws.recv(timeout=TIMEOUT))
        assert first["batch_id"] == "x" and first["exit"] == 0
        ws.send(json.dumps({"inputs": x[:1].tolist(), "batch_id": "x"}))
        while True:  # the rest of the IC-1 answers, then the error for the duplicate batch id
            message = json.loads(ws.recv(timeout=TIMEOUT))
            if message["type"] == "error":
                break
        assert "still in flight" in message["error"]
        gate.release()
        assert _receive_batch(ws, "x")[-1]["type"] == "end"
        ws.send(encode_npy(x[:2]))
        good = _receive_batch(ws, 7)
        assert [m["type"] for m in good] == ["answer", "answer", "end"]
        for m in good[:-1]:
            _check_answer(m, expected, m["id"])


def test_a_message_far_over_the_limit_closes_only_that_connection(server: ServerThread, expected) -> None:
    with connect(server.ws_url, max_size=None) as ws:
        ws.send(b"\0" * (2 * SETTINGS.max_body_bytes + 1))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TIMEOUT)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009  # message too big
    with connect(server.ws_url) as ws:
        ws.send(encode_npy(tiny_inputs(1)))
        assert _receive_batch(ws, 0)[-1]["type"] == "end"


def test_a_client_leaving_mid_batch_does_not_disturb_the_others(server, gate: Gate, http, expected) -> None:
    before = _metrics(http)
    gate.arm()
    with connect(server.ws_url) as ws:
        ws.send(encode_npy(tiny_inputs()))
        assert json.loads(ws.recv(timeout=TIMEOUT))["exit"] == 0
    # The leaver's batch is still held inside the model; another client queues up behind it.
    with connect(server.ws_url) as other:
        other.send(encode_npy(tiny_inputs()))
        deadline = time.monotonic() + TIMEOUT
        while _metrics(http)["requests"]["cancelled"] == before["requests"]["cancelled"]:
            assert time.monotonic() < deadline, "the server never noticed the client left"
            time.sleep(0.02)
        gate.release()
        messages = _receive_batch(other, 0)
    assert messages[-1]["type"] == "end" and len(messages) == N_ITEMS + 1
    for m in messages[:-1]:
        _check_answer(m, expected, m["id"])
    after = _metrics(http)
    assert after["connections"]["open"] == 0
    assert http.get("/health").status_code == 200


def test_concurrent_clients_are_batched_together_and_each_gets_its_own_answers(server, gate, http, expected) -> None:
    clients, per_client = 6, 2
    x = tiny_inputs()
    before = _metrics(http)

    async def client(c: int, started: asyncio.Event | None) -> list[dict]:
        async with async_connect(server.ws_url) as ws:
            rows = slice(c * per_client, (c + 1) * per_client)
            await ws.send(json.dumps({"inputs": x[rows].tolist(), "ids": list(range(rows.start, rows.stop))}))
            messages = []
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                messages.append(m)
                if m["type"] != "answer":
                    return messages

    async def main() -> list[list[dict]]:
        # Client 0's batch is held at stage 2; the others queue up meanwhile and must then run as ONE batch.
        gate.arm()
        tasks = [asyncio.create_task(client(0, None))]
        while _metrics(http)["batches"]["run"] == before["batches"]["run"]:
            await asyncio.sleep(0.02)
        tasks += [asyncio.create_task(client(c, None)) for c in range(1, clients)]
        while _metrics(http)["requests"]["ws_batches"] < before["requests"]["ws_batches"] + clients:
            await asyncio.sleep(0.02)
        gate.release()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    for c, messages in enumerate(results):
        assert messages[-1]["type"] == "end"
        ids = sorted(m["id"] for m in messages[:-1])
        assert ids == list(range(c * per_client, (c + 1) * per_client))
        for m in messages[:-1]:
            _check_answer(m, expected, m["id"])
    after = _metrics(http)
    assert after["batches"]["run"] - before["batches"]["run"] == 2
    assert after["batches"]["max_items"] >= (clients - 1) * per_client
    assert after["items"] - before["items"] == clients * per_client
    assert sum(after["exit_histogram"]) == after["items"]
    assert after["latency_ms"]["p50"] is not None


def test_json_that_breaks_the_parser_gets_an_error_and_the_inflight_batch_still_ends(server, gate: Gate) -> None:
    x = tiny_inputs()
    with connect(server.ws_url) as ws:
        gate.arm()  # hold batch "x" in flight while the bad messages arrive
        ws.send(json.dumps({"inputs": x.tolist(), "batch_id": "x"}))
        assert json.loads(ws.recv(timeout=TIMEOUT))["batch_id"] == "x"
        for body in PARSER_BREAKERS:
            ws.send(body)
        errors = []
        while len(errors) < len(PARSER_BREAKERS):
            message = json.loads(ws.recv(timeout=TIMEOUT))
            if message["type"] == "error":
                errors.append(message["batch_id"])
        assert errors == [1, 2, 3]
        gate.release()
        assert _receive_batch(ws, "x")[-1]["type"] == "end"


def test_an_error_reply_names_the_clients_batch_id(server: ServerThread) -> None:
    x = tiny_inputs()
    with connect(server.ws_url) as ws:
        ws.send(json.dumps({"batch_id": "mine", "inputs": x[:1, :2].tolist()}))
        message = json.loads(ws.recv(timeout=TIMEOUT))
        assert message["type"] == "error" and message["batch_id"] == "mine" and "shape" in message["error"]


def test_an_unexpected_decode_failure_answers_that_batch_and_keeps_the_connection(server, monkeypatch) -> None:
    real_decode_json = app_module.decode_json

    def flaky(text, *args):
        if "boom" in text:
            raise RuntimeError("a bug in the codec")
        return real_decode_json(text, *args)

    monkeypatch.setattr(app_module, "decode_json", flaky)
    with connect(server.ws_url) as ws:
        ws.send('"boom"')
        message = json.loads(ws.recv(timeout=TIMEOUT))
        assert message["type"] == "error" and message["batch_id"] == 0 and "RuntimeError" in message["error"]
        ws.send(encode_npy(tiny_inputs(2)))
        assert _receive_batch(ws, 1)[-1]["type"] == "end"


def test_an_http_client_leaving_mid_body_is_counted_not_logged_as_an_error(server, http, caplog) -> None:
    import logging
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(server.url)
    before = http.get("/metrics").json()["requests"]["cancelled"]
    with caplog.at_level(logging.DEBUG):
        with socket.create_connection((url.hostname, url.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n" + b'{"inputs": [[')  # then the client goes away
        deadline = time.time() + TIMEOUT
        while http.get("/metrics").json()["requests"]["cancelled"] == before:
            assert time.time() < deadline, "the server never noticed the client had left"
            time.sleep(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert http.get("/health").json()["status"] == "ok"  # and it goes on serving
