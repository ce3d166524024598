"""The load test against a real server: exact accounting of lost / duplicated / wrong answers, and that it can fail."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from ee_rl.serve import ServedModel, ServerThread, ServeSettings, create_app, run_load_test
from ee_rl.serve.load_test import answer_matches
from ee_rl.serve.runner import bind_socket
from tests.serve.conftest import tiny_inputs


@pytest.fixture(scope="module")
def server(tiny_served: ServedModel) -> Iterator[ServerThread]:
    with ServerThread(create_app(tiny_served, ServeSettings(max_batch=32, max_wait_ms=2.0))) as running:
        yield running


def _run(url: str, expected: dict, encoding: str = "npy", clients: int = 10, timeout_s: float = 60.0):
    return asyncio.run(
        run_load_test(
            url, tiny_inputs(), expected, "class", clients=clients, batches=2, batch_size=3, timeout_s=timeout_s,
            connect_timeout_s=10.0, seed=1, encoding=encoding,
        )
    )


@pytest.mark.parametrize("encoding", ["npy", "json"])
def test_every_item_answered_once_and_right(server: ServerThread, tiny_expected, encoding: str) -> None:
    report = _run(server.ws_url, tiny_expected, encoding)
    assert report.ok, report.to_dict()
    assert (report.items, report.answered, report.lost, report.duplicated, report.wrong) == (60, 60, 0, 0, 0)
    assert report.p50_ms is not None and report.p99_ms >= report.p50_ms and report.items_per_s > 0
    assert set(report.exit_histogram) == {"0", "3"} and sum(report.exit_histogram.values()) == 60
    d = report.to_dict()
    assert {"clients", "items", "lost", "duplicated", "wrong", "items_per_s", "p50_ms", "p99_ms"} <= set(d)


def test_answers_that_differ_from_the_offline_model_are_counted_wrong(server: ServerThread, tiny_expected) -> None:
    flipped = {**tiny_expected, "exit_index": np.where(tiny_expected["exit_index"] == 0, 3, 0)}
    report = _run(server.ws_url, flipped, clients=4)
    assert report.wrong == report.items == 24 and report.lost == 0 and not report.ok


def test_an_unreachable_server_loses_every_item_within_the_time_limit(tiny_expected) -> None:
    sock = bind_socket("127.0.0.1", 0)  # a bound port nobody accepts on... then closed: connection refused
    port = sock.getsockname()[1]
    sock.close()
    report = _run(f"ws://127.0.0.1:{port}/stream", tiny_expected, clients=3, timeout_s=20.0)
    assert report.lost == report.items == 18 and report.answered == 0 and report.errors == 3 and not report.ok


def test_answer_matches_checks_label_exit_cost_and_probabilities(tiny_expected) -> None:
    i = 0
    good = {
        "class": int(tiny_expected["labels"][i]),
        "exit": int(tiny_expected["exit_index"][i]),
        "flops_fraction": float(tiny_expected["flops_fraction"][i]),
        "probs": tiny_expected["probs"][i].tolist(),
    }
    assert answer_matches(good, tiny_expected, i, "class")
    probs = np.array(good["probs"])
    probs[0] += 1e-3
    for bad in [
        {**good, "class": good["class"] + 1},
        {**good, "exit": good["exit"] + 1},
        {**good, "flops_fraction": good["flops_fraction"] * 1.001},
        {**good, "probs": probs.tolist()},
        {**good, "probs": good["probs"][:-1]},
        {k: v for k, v in good.items() if k != "probs"},
    ]:
        assert not answer_matches(bad, tiny_expected, i, "class")
