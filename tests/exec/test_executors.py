"""The executors behind one interface: the same results, dependencies and errors on serial, process and Ray.

Tasks here are standard-library functions, importable by every worker (Ray and spawned processes import them by
name, as they import ee_rl's tasks).
"""

from __future__ import annotations

import math
import operator
import os
import sys
import time

import pytest

from ee_rl.errors import UserError
from ee_rl.exec import ProcessExecutor, SerialExecutor, WorkerDied, check_executor, check_ray_address, make_executor
from ee_rl.rl.games import rom_id


def test_results_and_dependencies_are_the_same_on_every_executor(executor):
    a = executor.submit(operator.add, 1, 2)
    b = executor.submit(operator.mul, a, 10)  # runs once a is done, with a's result
    c = executor.submit(operator.add, b, executor.put(5))
    results = {handle: value for handle, value in executor.as_completed([c, b, a])}
    assert (results[a], results[b], results[c]) == (3, 30, 35)
    assert executor.result(c) == 35


def test_a_failing_task_fails_itself_and_its_dependents(executor):
    bad = executor.submit(math.sqrt, -1.0)
    after = executor.submit(operator.add, bad, 1)
    for handle in (bad, after):
        with pytest.raises(ValueError, match="math domain error"):
            executor.result(handle)


def test_a_user_error_in_a_task_is_the_same_one_line_error(executor):
    with pytest.raises(UserError) as caught:
        executor.result(executor.submit(rom_id, "Nope"))
    assert str(caught.value).startswith("unknown Atari game 'Nope'") and "\n" not in str(caught.value)


def test_the_serial_executor_runs_a_task_when_its_result_is_first_needed():
    executor = SerialExecutor()
    started = executor.submit(time.monotonic_ns)
    time.sleep(0.01)
    before = time.monotonic_ns()
    assert executor.result(started) > before  # not run at submit
    order = [executor.submit(operator.add, i, 0) for i in range(3)]
    assert [v for _, v in executor.as_completed(order)] == [0, 1, 2]


def test_the_process_executor_admits_tasks_by_their_cpu_requests():
    with ProcessExecutor(cpus=2) as executor:
        wide = [executor.submit(time.sleep, 0.2, cpus=2) for _ in range(2)]
        assert executor.running == 1  # two CPUs each: one at a time
        narrow = [executor.submit(time.sleep, 0.2, cpus=1) for _ in range(2)]
        huge = executor.submit(operator.add, 1, 1, cpus=64)  # more than there is: runs alone, but runs
        assert [v for _, v in executor.as_completed([*wide, *narrow])] == [None] * 4
        assert executor.result(huge) == 2
        assert executor.running == 0


def test_a_process_worker_that_dies_is_an_error_not_a_hang():
    with ProcessExecutor(cpus=1) as executor:
        with pytest.raises(WorkerDied, match="worker process died while running"):
            executor.result(executor.submit(os._exit, 3))


@pytest.mark.parametrize("address", ["auto", "ray://head:10001", "10.0.0.1:6379", "head-node.cluster:6379"])
def test_ray_addresses_that_are_accepted(address):
    assert check_ray_address(address) == address


@pytest.mark.parametrize("address", ["foo", "ray://head", "head:99999", "http://head:80", "head:port", ""])
def test_ray_addresses_that_are_refused(address):
    with pytest.raises(UserError, match="--ray-address must be 'auto', HOST:PORT or ray://HOST:PORT"):
        check_ray_address(address)


def test_executor_choices_are_checked_before_any_work(monkeypatch):
    with pytest.raises(UserError, match="unknown executor 'gpu'; accepted: serial, process, ray"):
        check_executor("gpu")
    with pytest.raises(UserError, match="--ray-address needs --executor ray"):
        check_executor("process", "auto")
    assert isinstance(make_executor("serial"), SerialExecutor)
    # Without Ray installed, asking for it is one line naming the extra (checked, and at use).
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"--executor ray needs Ray, which is not installed: pip install 'ee_rl\[ray\]'"):
        check_executor("ray")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    from ee_rl.exec.ray_backend import require_ray

    with pytest.raises(UserError, match=r"pip install 'ee_rl\[ray\]'"):
        require_ray()


def test_ray_started_here_is_stopped_by_close_and_a_running_ray_is_left_running(local_ray):
    from ee_rl.exec import RayExecutor

    with RayExecutor() as executor:  # Ray is running already (the tests'): used, not stopped
        assert executor.result(executor.submit(operator.add, 2, 2)) == 4
    assert local_ray.is_initialized()


def test_an_address_where_nothing_answers_is_one_line_at_once():
    from ee_rl.exec.ray_backend import check_reachable

    with pytest.raises(UserError, match=r"cannot reach the Ray cluster at ray://127\.0\.0\.1:1: "):
        check_reachable("ray://127.0.0.1:1")
    check_reachable("auto")  # left to Ray
