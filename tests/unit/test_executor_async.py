"""Async node functions: concurrency, errors, timeouts, lazy checks, caching and cancellation (§5.3 18-19, 27-40)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from comfyserve.engine.context import RunContext
from comfyserve.engine.executor import ExecutionResult, Executor
from comfyserve.engine.graph_utils import GraphBuilder, GraphNode
from tests.testpack.harness import Recorder, context, image, mask, pack_registry, run, saved_values

REGISTRY = pack_registry()
SLEEP = 0.15


@pytest.fixture
def executor() -> Iterator[Executor]:
    executor = Executor(REGISTRY)
    yield executor
    executor.close()


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    return context(tmp_path)


def timed_run(
    executor: Executor, g: GraphBuilder | dict[str, Any], outputs: Sequence[GraphNode | str], ctx: RunContext
) -> tuple[ExecutionResult, Recorder, float]:
    start = time.perf_counter()
    result, events = run(executor, g, outputs, ctx)
    return result, events, time.perf_counter() - start


def test_basic_async_and_dependency_order(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    first = g.node("TestSleep", value=g.node("StubInt", value=5).out(0), seconds=0.01)
    second = g.node("TestSleep", value=first.out(0), seconds=0.01)
    added = g.node("TestIntMathOperation", a=second.out(0), b=first.out(0), operation="add")  # sync after async
    report = g.node("TestReport", value=added.out(0))
    result, _ = run(executor, g, [report], ctx)
    assert result.ui_outputs[report.id] == {"values": [10]}
    order = result.executed
    assert order.index(first.id) < order.index(second.id) < order.index(added.id)
    assert result.timings[first.id] >= 0.01


def test_independent_async_nodes_overlap(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    sleeps = [g.node("TestSleep", value=i, seconds=SLEEP) for i in range(3)]
    reports = [g.node("TestReport", value=s.out(0)) for s in sleeps]
    result, _, elapsed = timed_run(executor, g, reports, ctx)
    assert result.status == "success" and elapsed < 2 * SLEEP
    assert [result.ui_outputs[r.id] for r in reports] == [{"values": [0]}, {"values": [1]}, {"values": [2]}]


def test_expansion_into_async_nodes_runs_them_in_parallel(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    parallel = g.node(
        "TestParallelSleep",
        image1=image(g).out(0),
        image2=image(g, "BLACK").out(0),
        image3=image(g).out(0),
        sleep1=SLEEP,
        sleep2=SLEEP,
        sleep3=SLEEP,
    )
    save = g.node("TestSaveImage", images=parallel.out(0), filename_prefix="p")
    result, events, elapsed = timed_run(executor, g, [save], ctx)
    assert saved_values(result, save) == [pytest.approx(2 / 3)]  # ComfyUI's test: an average pixel of 170
    assert elapsed < 2 * SLEEP
    progress_nodes = {p["node"] for p in events.of("progress")}
    assert progress_nodes == {parallel.id}  # ephemeral sleeps report progress as their display node


def test_dynamically_generated_async_graph_runs_in_parallel(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    generated = g.node("TestDynamicAsyncGeneration", value=1, count=5, seconds=SLEEP)
    report = g.node("TestReport", value=generated.out(0))
    result, _, elapsed = timed_run(executor, g, [report], ctx)
    assert result.ui_outputs[report.id] == {"values": [1 + 2 + 3 + 4 + 5]}
    assert elapsed < 2.5 * SLEEP


def test_lazy_evaluation_skips_an_unneeded_async_branch(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    slow = g.node("TestSleep", value=image(g, "BLACK").out(0), seconds=1.0)
    mix = g.node("TestLazyMixImages", image1=image(g).out(0), image2=slow.out(0), mask=mask(g, 0.0).out(0))
    save = g.node("TestSaveImage", images=mix.out(0), filename_prefix="l")
    result, events, elapsed = timed_run(executor, g, [save], ctx)
    assert slow.id not in events.ran() and elapsed < 0.5
    assert saved_values(result, save) == [1.0]


@pytest.mark.parametrize("condition", [True, False])
def test_async_check_lazy_status(executor: Executor, ctx: RunContext, condition: bool) -> None:
    g = GraphBuilder()
    one, two = g.node("StubInt", value=1), g.node("StubInt", value=2)
    lazy = g.node("TestAsyncLazyCheck", input1=one.out(0), input2=two.out(0), condition=condition)
    report = g.node("TestReport", value=lazy.out(0))
    result, events = run(executor, g, [report], ctx)
    assert result.ui_outputs[report.id] == {"values": [1 if condition else 2]}
    assert (two.id in events.ran()) is not condition


def test_async_exception_is_an_execution_error_on_that_node(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    failing = g.node("TestAsyncError", value=1, error_after=0.01)
    result, _ = run(executor, g, [g.node("TestReport", value=failing.out(0))], ctx)
    [error] = result.errors
    assert error["node_id"] == failing.id and error["node_type"] == "TestAsyncError"
    assert error["exception_message"] == "Intentional async execution error for testing"
    assert error["exception_type"] == "RuntimeError"
    # the executor recovers: the next prompt on the same executor runs normally
    g2 = GraphBuilder()
    ok = g2.node("TestSleep", value=3, seconds=0.01)
    again, _ = run(executor, g2, [g2.node("TestReport", value=ok.out(0))], ctx)
    assert again.status == "success"


def test_timeout_inside_a_node(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    slow = g.node("TestAsyncTimeout", value=1, timeout=0.02, operation_time=1.0)
    result, _, elapsed = timed_run(executor, g, [g.node("TestReport", value=slow.out(0))], ctx)
    assert "timed out" in result.errors[0]["exception_message"] and elapsed < 0.5


def test_sync_error_while_an_async_node_runs(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    slow = g.node("TestSleep", value=1, seconds=1.0)
    failing = g.node("TestFailingNode", value=2, message="sync failure")
    reports = [g.node("TestReport", value=slow.out(0)), g.node("TestReport", value=failing.out(0))]
    result, _, elapsed = timed_run(executor, g, reports, ctx)
    assert result.errors[0]["node_id"] == failing.id and result.errors[0]["exception_message"] == "sync failure"
    assert elapsed < 0.5  # the running async node was cancelled, not awaited


def test_async_node_with_an_execution_blocker(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    saves = []
    for block in (False, True):
        slept = g.node("TestSleep", value=image(g).out(0), seconds=0.01)
        gated = g.node("TestExecutionBlocker", input=slept.out(0), block=block, verbose=False)
        saves.append(g.node("TestSaveImage", images=gated.out(0), filename_prefix=f"b{block}"))
    result, _ = run(executor, g, saves, ctx)
    assert result.status == "success" and list(result.ui_outputs) == [saves[0].id]


def test_async_results_are_cached(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    slow = g.node("TestSleep", value=4, seconds=SLEEP)
    report = g.node("TestReport", value=slow.out(0))
    prompt = g.finalize()
    run(executor, prompt, [report], ctx)
    result, events, elapsed = timed_run(executor, prompt, [report], ctx)
    assert events.ran() == set() and elapsed < 0.1 and result.ui_outputs[report.id] == {"values": [4]}


def test_cancellation_inside_an_async_node(executor: Executor, tmp_path: Path) -> None:
    progress: list[int] = []
    ctx = context(tmp_path, cancel_check=lambda: len(progress) >= 1, progress_hook=lambda v, t: progress.append(v))
    g = GraphBuilder()
    slow = g.node("TestSleep", value=1, seconds=1.0, steps=10)
    result, events, elapsed = timed_run(executor, g, [g.node("TestReport", value=slow.out(0))], ctx)
    assert result.status == "interrupted" and elapsed < 0.5
    assert events.of("execution_interrupted")[0]["node_id"] == slow.id


def test_cancellation_while_waiting_on_a_silent_async_node(executor: Executor, tmp_path: Path) -> None:
    started = time.perf_counter()
    ctx = context(tmp_path, cancel_check=lambda: time.perf_counter() - started > 0.1)
    g = GraphBuilder()
    slow = g.node("TestSleep", value=1, seconds=2.0, steps=1)
    result, _, elapsed = timed_run(executor, g, [g.node("TestReport", value=slow.out(0))], ctx)
    assert result.status == "interrupted" and elapsed < 0.6


def test_execute_async_inside_a_running_loop(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    slow = g.node("TestSleep", value=9, seconds=0.01)
    report = g.node("TestReport", value=slow.out(0))
    prompt = g.finalize()
    result = asyncio.run(executor.execute_async(prompt, [report.id], context=ctx))
    assert result.ui_outputs[report.id] == {"values": [9]}


def test_execute_reuses_one_event_loop_in_any_thread_until_closed(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    report = g.node("TestReport", value=g.node("TestSleep", value=3, seconds=0.01).out(0))
    prompt = g.finalize()
    loops: list[asyncio.AbstractEventLoop] = []

    def record_loop(_event: str, _data: dict[str, Any]) -> None:
        loops.append(asyncio.get_running_loop())

    def execute() -> ExecutionResult:
        return executor.execute(prompt, [report.id], context=ctx, on_event=record_loop)

    execute()
    execute()
    with ThreadPoolExecutor(max_workers=1) as pool:  # a thread without an event loop
        assert pool.submit(execute).result().ui_outputs[report.id] == {"values": [3]}
    first = loops[0]
    assert all(loop is first for loop in loops) and not first.is_closed()

    executor.close()
    assert first.is_closed()
    assert execute().ui_outputs[report.id] == {"values": [3]}
    assert loops[-1] is not first
    executor.close()
    executor.close()  # closing twice is harmless
