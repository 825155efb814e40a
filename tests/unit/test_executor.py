"""The executor against ComfyUI's behaviour checklist (reference §5.3) with the torch-free test pack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyserve.engine.context import RunContext
from comfyserve.engine.executor import Executor
from comfyserve.engine.graph_utils import GraphBuilder
from comfyserve.engine.validation import validate_prompt
from tests.testpack.basic import TestNoOp
from tests.testpack.flow import TestIsChangedWithConstants
from tests.testpack.harness import context, image, mask, pack_registry, run, saved_values

REGISTRY = pack_registry()


@pytest.fixture
def executor() -> Iterator[Executor]:
    executor = Executor(REGISTRY)
    yield executor
    executor.close()


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    return context(tmp_path)


def lazy_mix_graph(mask_value: float) -> tuple[GraphBuilder, dict[str, str]]:
    g = GraphBuilder()
    white, black, m = image(g, "WHITE"), image(g, "BLACK"), mask(g, mask_value)
    mix = g.node("TestLazyMixImages", image1=white.out(0), image2=black.out(0), mask=m.out(0))
    save = g.node("TestSaveImage", images=mix.out(0), filename_prefix="lazy")
    return g, {"white": white.id, "black": black.id, "mix": mix.id, "save": save.id}


# -- 1-5: lazy evaluation, caching, IS_CHANGED --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "runs_white", "runs_black", "pixel"), [(0.0, True, False, 1.0), (1.0, False, True, 0.0)]
)
def test_lazy_input_runs_only_the_needed_producer(
    executor: Executor, ctx: RunContext, value: float, runs_white: bool, runs_black: bool, pixel: float
) -> None:
    g, ids = lazy_mix_graph(value)
    result, events = run(executor, g, [ids["save"]], ctx)
    assert result.status == "success"
    assert (ids["white"] in events.ran()) is runs_white
    assert (ids["black"] in events.ran()) is runs_black
    assert result.ui_outputs[ids["save"]]["images"][0]["value"] == pixel


def test_lazy_input_with_a_partial_mask_needs_both(executor: Executor, ctx: RunContext) -> None:
    g, ids = lazy_mix_graph(0.25)
    result, events = run(executor, g, [ids["save"]], ctx)
    assert {ids["white"], ids["black"]} <= events.ran()
    assert result.ui_outputs[ids["save"]]["images"][0]["value"] == pytest.approx(0.75)


def test_full_cache_runs_nothing_and_still_reports_outputs(executor: Executor, ctx: RunContext) -> None:
    g, ids = lazy_mix_graph(0.0)
    prompt = g.finalize()
    first, _ = run(executor, prompt, [ids["save"]], ctx)
    second, events = run(executor, prompt, [ids["save"]], ctx)
    assert second.executed == [] and events.ran() == set()
    assert second.ui_outputs == first.ui_outputs
    assert sorted(second.cached) == sorted(first.executed)
    assert events.of("execution_cached")[0]["nodes"] == second.cached
    assert events.of("executed") == [
        {"node": ids["save"], "display_node": ids["save"], "output": first.ui_outputs[ids["save"]], "prompt_id": "p1"}
    ]


def test_partial_cache_reruns_only_the_changed_node_and_descendants(executor: Executor, ctx: RunContext) -> None:
    g, ids = lazy_mix_graph(0.0)
    prompt = g.finalize()
    run(executor, prompt, [ids["save"]], ctx)
    prompt[ids["save"]]["inputs"]["filename_prefix"] = "other"
    result, events = run(executor, prompt, [ids["save"]], ctx)
    assert events.ran() == {ids["save"]}
    prompt[ids["mix"]]["inputs"]["mask"] = [ids["black"], 0]  # a mask of 0.0 from another producer
    result, events = run(executor, prompt, [ids["save"]], ctx)
    assert events.ran() == {ids["black"], ids["mix"], ids["save"]}
    assert result.status == "success"


@pytest.mark.parametrize(("should_change", "reruns"), [(False, False), (True, True)])
def test_custom_is_changed(executor: Executor, ctx: RunContext, should_change: bool, reruns: bool) -> None:
    g = GraphBuilder()
    changed = g.node("TestCustomIsChanged", value=image(g).out(0), should_change=should_change)
    save = g.node("TestSaveImage", images=changed.out(0), filename_prefix="c")
    prompt = g.finalize()
    run(executor, prompt, [save.id], ctx)
    for _ in range(2):
        _, events = run(executor, prompt, [save.id], ctx)
        assert (changed.id in events.ran()) is reruns
        assert (save.id in events.ran()) is reruns


def test_is_changed_sees_constants_only(executor: Executor, ctx: RunContext) -> None:
    TestIsChangedWithConstants.seen.clear()
    g = GraphBuilder()
    scaled = g.node("TestIsChangedWithConstants", image=image(g).out(0), value=0.5)
    save = g.node("TestSaveImage", images=scaled.out(0), filename_prefix="k")
    prompt = g.finalize()
    first, _ = run(executor, prompt, [save.id], ctx)
    second, events = run(executor, prompt, [save.id], ctx)
    assert TestIsChangedWithConstants.seen[0] == {"image": None, "value": 0.5}
    assert saved_values(first, save) == [0.5]
    assert events.ran() == set() and second.ui_outputs == first.ui_outputs


def test_is_changed_exception_means_always_rerun(
    executor: Executor, ctx: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(cls: type, image: object, value: float) -> float:
        raise RuntimeError("cannot tell")

    monkeypatch.setattr(TestIsChangedWithConstants, "IS_CHANGED", classmethod(broken))
    executor = Executor(REGISTRY)
    g = GraphBuilder()
    scaled = g.node("TestIsChangedWithConstants", image=image(g).out(0), value=2.0)
    prompt = g.finalize()
    run(executor, prompt, [scaled.id], ctx)
    _, events = run(executor, prompt, [scaled.id], ctx)
    assert scaled.id in events.ran()


def test_client_supplied_is_changed_is_part_of_the_key(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    noop = g.node("TestNoOp", value=3)
    prompt = g.finalize()
    run(executor, prompt, [noop.id], ctx)
    prompt[noop.id]["is_changed"] = ["v2"]
    _, events = run(executor, prompt, [noop.id], ctx)
    assert events.ran() == {noop.id}


# -- 6: runtime errors ----------------------------------------------------------------------------------------


def test_runtime_error_reports_execution_error_and_stops(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    stub = g.node("StubInt", value=4)
    failing = g.node("TestFailingNode", value=stub.out(0), message="it broke")
    after = g.node("TestNoOp", value=failing.out(0))
    other = g.node("TestNoOp", value=g.node("TestNoOp", value=7).out(0))
    result, events = run(executor, g, [after, other], ctx)
    assert result.status == "error"
    [error] = result.errors
    assert {k: error[k] for k in ("prompt_id", "node_id", "node_type", "exception_message", "exception_type")} == {
        "prompt_id": "p1",
        "node_id": failing.id,
        "node_type": "TestFailingNode",
        "exception_message": "it broke",
        "exception_type": "ValueError",
    }
    assert error["executed"] == result.executed and stub.id in result.executed and failing.id not in result.executed
    assert error["current_inputs"] == {"value": [4], "message": ["it broke"]}
    assert error["current_outputs"] == result.executed
    assert any("raise ValueError(message)" in line for line in error["traceback"])
    assert isinstance(error["timestamp"], int)
    assert after.id not in events.ran() and other.id not in events.ran()
    assert [m for m, _ in result.messages] == ["execution_start", "execution_cached", "execution_error"]
    assert events.names()[-2:] == ["execution_error", "executing"]


def test_node_input_error_reads_cleanly(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    failing = g.node("TestFailingNode", value=1, message="width must be a multiple of 8", kind="input")
    result, _ = run(executor, g, [failing], ctx)
    assert result.errors[0]["exception_message"] == "width must be a multiple of 8"
    assert result.errors[0]["exception_type"] == "comfyserve.engine.errors.NodeInputError"


def test_keep_going_lets_independent_outputs_finish(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    failing = g.node("TestFailingNode", value=1, message="no")
    dependent = g.node("TestSaveImage", images=failing.out(0), filename_prefix="never")
    fine = g.node("TestSaveImage", images=image(g).out(0), filename_prefix="fine")
    result, events = run(executor, g, [dependent, fine], ctx, keep_going=True)
    assert result.status == "error" and len(result.errors) == 1
    assert saved_values(result, fine) == [1.0]
    assert dependent.id not in events.ran()
    assert "execution_success" not in events.names()


# -- 11-14: graph structure ------------------------------------------------------------------------------------


def test_dynamic_cycle_is_an_error_on_the_expanding_node(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    generator = g.node("TestDynamicDependencyCycle", input1=image(g).out(0), input2=image(g, "BLACK").out(0))
    save = g.node("TestSaveImage", images=generator.out(0), filename_prefix="cycle")
    result, _ = run(executor, g, [save], ctx)
    assert result.status == "error"
    [error] = result.errors
    assert error["node_id"] == generator.id
    assert error["exception_message"] == "Dependency cycle detected"
    assert error["exception_type"] == "comfyserve.engine.graph.DependencyCycleError"


def test_static_cycle_and_dangling_link_fail_cleanly(executor: Executor, ctx: RunContext) -> None:
    cyclic = {
        "a": {"class_type": "TestNoOp", "inputs": {"value": ["b", 0]}},
        "b": {"class_type": "TestNoOp", "inputs": {"value": ["a", 0]}},
    }
    result, _ = run(executor, cyclic, ["a"], ctx)
    assert result.errors[0]["exception_message"] == "Dependency cycle detected"
    dangling = {"a": {"class_type": "TestNoOp", "inputs": {"value": ["zz", 0]}}}
    result, _ = run(executor, dangling, ["a"], ctx)
    assert result.errors[0]["node_id"] == "a"
    assert result.errors[0]["exception_message"] == "node a links to node 'zz', which does not exist"


def test_only_ancestors_of_requested_outputs_are_touched(executor: Executor, ctx: RunContext) -> None:
    prompt = {
        "1": {"class_type": "TestNoOp", "inputs": {"value": 1}},
        "broken": {"class_type": "NoSuchNode", "inputs": {"value": ["gone", 0]}},
    }
    result, events = run(executor, prompt, ["1"], ctx)
    assert result.status == "success" and events.ran() == {"1"}


def test_undeclared_linked_inputs_are_kwargs_and_undeclared_constants_dropped(
    executor: Executor, ctx: RunContext
) -> None:
    g = GraphBuilder()
    white = g.node("StubImage", content="WHITE", height=8, width=8, batch_size=1, upload="image")
    average = g.node("TestVariadicAverage", input1=white.out(0), input2=image(g, "BLACK").out(0), input3=white.out(0))
    save = g.node("TestSaveImage", images=average.out(0), filename_prefix="avg")
    result, _ = run(executor, g, [save], ctx)
    assert saved_values(result, save) == [pytest.approx(2 / 3)]


@pytest.mark.parametrize("iterations", [1, 2, 4])
def test_for_loop_by_expansion(executor: Executor, ctx: RunContext, iterations: int) -> None:
    g = GraphBuilder()
    start = g.node("TestCustomIsChanged", value=g.node("StubInt", value=1).out(0), should_change=True)
    loop_open = g.node("TestForLoopOpen", remaining=iterations, value=start.out(0))
    doubled = g.node("TestIntMathOperation", a=loop_open.out(1), b=2, operation="multiply")
    loop_close = g.node("TestForLoopClose", flow_control=loop_open.out(0), value=doubled.out(0))
    report = g.node("TestReport", value=loop_close.out(0))
    prompt = g.finalize()
    result, _ = run(executor, prompt, [report], ctx)
    assert result.status == "success", result.errors
    assert result.ui_outputs[report.id] == {"values": [2**iterations]}
    _, again = run(executor, prompt, [report], ctx)  # IS_CHANGED NaN upstream: the loop runs again
    assert {start.id, loop_close.id, report.id} <= again.ran()


def test_duplicate_expansion_id_is_an_error_on_the_expanding_node(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    existing = g.node("StubInt", value=1)
    expander = g.node("TestExpandWithIds", node_id=existing.id, value=2)
    report = g.node("TestReport", value=expander.out(0))
    g.node("TestNoOp", value=existing.out(0))
    result, _ = run(executor, g, [report], ctx)
    assert result.errors[0]["node_id"] == expander.id
    assert result.errors[0]["exception_message"].startswith(f"Attempt to add duplicate node {existing.id}.")


def test_output_nodes_inside_an_expansion_run_and_report_meta(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    expander = g.node("TestExpandSave", content="BLACK", prefix="inner")
    result, events = run(executor, g, [expander], ctx)
    [(save_id, ui)] = result.ui_outputs.items()
    assert save_id.startswith(f"{expander.id}.0.0.") and ui["images"][0] == {"value": 0.0, "prefix": "inner"}
    assert result.meta[save_id] == {
        "node_id": save_id,
        "display_node": expander.id,
        "parent_node": expander.id,
        "real_node_id": expander.id,
    }
    executing = {d["node"]: d["display_node"] for d in events.of("executing") if d["node"]}
    assert executing[save_id] == expander.id
    again, events = run(executor, g, [expander], ctx)
    assert events.ran() == set() and again.executed == []


# -- 15-17, 20: lists --------------------------------------------------------------------------------------------


def test_mixed_expansion_returns_over_a_list(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    floats = [g.node("StubFloat", value=v).out(0) for v in (0.1, 0.2, 0.3)]
    listed = g.node("TestMakeListNode", value1=floats[0], value2=floats[1], value3=floats[2])
    mixed = g.node("TestMixedExpansionReturns", input1=listed.out(0))
    first = g.node("TestSaveImage", images=mixed.out(0), filename_prefix="a")
    second = g.node("TestSaveImage", images=mixed.out(1), filename_prefix="b")
    result, _ = run(executor, g, [first, second], ctx)
    assert result.status == "success", result.errors
    assert saved_values(result, first) == [1.0, 0.0, pytest.approx(0.3)]
    assert saved_values(result, second) == [0.0, 1.0, pytest.approx(0.3)]


def test_per_element_lazy_evaluation_then_input_is_list_merge(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    masks = g.node(
        "TestMakeListNode", value1=mask(g, 0.0).out(0), value2=mask(g, 1.0).out(0), value3=mask(g, 0.5).out(0)
    )
    mix = g.node("TestLazyMixImages", image1=image(g).out(0), image2=image(g, "BLACK").out(0), mask=masks.out(0))
    batch = g.node("TestRebatchImages", images=mix.out(0))
    save = g.node("TestSaveImage", images=batch.out(0), filename_prefix="r")
    result, _ = run(executor, g, [save], ctx)
    assert saved_values(result, save) == [1.0, 0.0, 0.5]


def test_output_reuse_dedupes_identical_outputs(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    source = image(g)
    first = g.node("TestSaveImage", images=source.out(0), filename_prefix="same")
    second = g.node("TestSaveImage", images=source.out(0), filename_prefix="same")
    result, events = run(executor, g, [first, second], ctx)
    assert result.ui_outputs[first.id] == result.ui_outputs[second.id] == {"images": [{"value": 1.0, "prefix": "same"}]}
    assert len(events.ran() & {first.id, second.id}) == 1
    assert len({first.id, second.id} & set(result.cached)) == 1


def test_list_mapping_repeats_the_last_element_of_shorter_lists(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    a = g.node("TestIntRange", start=0, count=3)
    b = g.node("TestIntRange", start=10, count=2)
    added = g.node("TestIntMathOperation", a=a.out(0), b=b.out(0), operation="add")
    total = g.node("TestListToAccumulation", values=added.out(0))
    report = g.node("TestReport", value=added.out(0))
    result, _ = run(executor, g, [report, total], ctx)
    assert result.ui_outputs[report.id] == {"values": [10, 12, 13]}  # ui of list-mapped calls merged
    accumulate = g.node("TestReport", value=total.out(1))
    counts = g.node("TestIntRange", start=0, count=g.node("TestIntRange", start=2, count=2).out(0))
    concatenated = g.node("TestListToAccumulation", values=counts.out(0))
    report_concat = g.node("TestReport", value=concatenated.out(1))
    result, _ = run(executor, g, [accumulate, report_concat], ctx)
    assert result.ui_outputs[accumulate.id] == {"values": [3]}
    assert result.ui_outputs[report_concat.id] == {"values": [5]}  # OUTPUT_IS_LIST calls concatenated: 2 + 3


def test_execution_blocker_in_a_list_drops_only_that_element(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    images = g.node("TestMakeListNode", value1=image(g).out(0), value2=image(g, "BLACK").out(0), value3=image(g).out(0))
    blocks = g.node("TestMakeListNode", value1=0, value2=1, value3=0)
    blocked = g.node("TestExecutionBlocker", input=images.out(0), block=blocks.out(0), verbose=False)
    save = g.node("TestSaveImage", images=blocked.out(0), filename_prefix="b")
    result, events = run(executor, g, [save], ctx)
    assert result.status == "success"
    assert saved_values(result, save) == [1.0, 1.0]
    assert events.of("execution_error") == []


def test_blocker_with_message_is_reported_but_not_a_failure(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    blocked = g.node("TestExecutionBlocker", input=image(g).out(0), block=True, verbose=True)
    save = g.node("TestSaveImage", images=blocked.out(0), filename_prefix="b")
    noop = g.node("TestNoOp", value=blocked.out(0))
    downstream = g.node("TestReport", value=noop.out(0))
    result, events = run(executor, g, [save, downstream], ctx)
    assert result.status == "success" and result.errors == [] and result.ui_outputs == {}
    reports = events.of("execution_error")  # once per direct consumer; they pass on a silent blocker
    assert sorted(r["node_id"] for r in reports) == sorted([save.id, noop.id])
    assert {(r["exception_type"], r["exception_message"]) for r in reports} == {
        ("ExecutionBlocked", "Execution Blocked: Blocked by node")
    }
    assert {downstream.id, save.id} <= events.ran()
    assert "execution_error" not in [m for m, _ in result.messages]


# -- 21-24: partial execution through the outputs list --------------------------------------------------------


def test_only_targeted_outputs_and_their_ancestors_run(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    scaled = g.node("TestOutputNodeWithSocketOutput", image=image(g).out(0), value=0.5)
    target = g.node("TestSaveImage", images=scaled.out(0), filename_prefix="t")
    excluded_source = image(g, "BLACK")
    excluded = g.node("TestSaveImage", images=excluded_source.out(0), filename_prefix="x")
    result, events = run(executor, g, [target], ctx)
    assert excluded.id not in events.ran() and excluded_source.id not in events.ran()
    assert scaled.id in events.ran()  # an output node the target depends on still runs
    assert set(result.ui_outputs) == {scaled.id, target.id}


def test_lazy_evaluation_applies_within_targets(executor: Executor, ctx: RunContext) -> None:
    g, ids = lazy_mix_graph(0.0)
    black = g.lookup_node(ids["black"])
    assert black is not None
    g.node("TestSaveImage", images=black.out(0), filename_prefix="other")
    _, events = run(executor, g, [ids["save"]], ctx)
    assert ids["black"] not in events.ran()


# -- hidden inputs, node instances, events --------------------------------------------------------------------


def test_hidden_inputs(executor: Executor, tmp_path: Path) -> None:
    ctx = context(tmp_path, extra_pnginfo={"workflow": {"nodes": []}})
    g = GraphBuilder()
    hidden = g.node("TestHiddenInputs", value=1)
    prompt = g.finalize()
    result, _ = run(executor, prompt, [hidden], ctx)
    assert result.ui_outputs[hidden.id] == {
        "unique_id": [hidden.id],
        "prompt_nodes": [hidden.id],
        "extra_pnginfo": [{"workflow": {"nodes": []}}],
        "dynprompt_has_self": [True],
    }


def test_unique_id_and_not_idempotent_put_the_node_id_in_the_key(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    first, second = g.node("TestHiddenInputs", value=1), g.node("TestHiddenInputs", value=1)
    counters = [g.node("TestCallCounter", value=5), g.node("TestCallCounter", value=5)]
    result, events = run(executor, g, [first, second, *counters], ctx)
    assert {first.id, second.id, counters[0].id, counters[1].id} <= events.ran()
    assert result.ui_outputs[second.id]["unique_id"] == [second.id]


def test_node_instances_are_kept_per_node_and_class(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    counter = g.node("TestCallCounter", value=1)
    report = g.node("TestReport", value=counter.out(0))
    prompt = g.finalize()
    run(executor, prompt, [report], ctx)
    prompt[counter.id]["inputs"]["value"] = 2
    result, _ = run(executor, prompt, [report], ctx)
    assert result.ui_outputs[report.id] == {"values": [2]}  # the same instance counted its second call


def test_progress_state_tracks_each_node_from_running_to_finished(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    stub = image(g)
    sleep = g.node("TestSyncSleep", value=stub.out(0), seconds=0.0, steps=2)
    save = g.node("TestSaveImage", images=sleep.out(0), filename_prefix="e")
    _, events = run(executor, g, [save], ctx)
    states = events.of("progress_state")
    assert all(s["prompt_id"] == "p1" for s in states)
    changes = [(n["node_id"], n["state"], n["value"], n["max"]) for s in states for n in s["nodes"].values()]
    assert changes == [
        (stub.id, "running", 0.0, 1.0),
        (stub.id, "finished", 1.0, 1.0),
        (sleep.id, "running", 0.0, 1.0),
        (sleep.id, "running", 1.0, 2.0),
        (sleep.id, "running", 2.0, 2.0),
        (sleep.id, "finished", 2.0, 2.0),
        (save.id, "running", 0.0, 1.0),
        (save.id, "finished", 1.0, 1.0),
    ]
    entry = states[0]["nodes"][stub.id]
    assert entry == {
        "value": 0.0,
        "max": 1.0,
        "state": "running",
        "node_id": stub.id,
        "prompt_id": "p1",
        "display_node_id": stub.id,
        "parent_node_id": None,
        "real_node_id": stub.id,
    }
    _, again = run(executor, g, [save], ctx)  # all cached: as ComfyUI, only the output is visited (finished)
    assert [(n["node_id"], n["state"]) for s in again.of("progress_state") for n in s["nodes"].values()] == [
        (save.id, "finished")
    ]


def test_event_order_for_one_prompt(executor: Executor, ctx: RunContext) -> None:
    g = GraphBuilder()
    sleep = g.node("TestSyncSleep", value=image(g).out(0), seconds=0.0, steps=2)
    save = g.node("TestSaveImage", images=sleep.out(0), filename_prefix="e")
    result, events = run(executor, g, [save], ctx)
    assert [name for name in events.names() if name != "progress_state"] == [
        "execution_start",
        "execution_cached",
        "executing",
        "executing",
        "progress",
        "progress",
        "executing",
        "executed",
        "execution_success",
        "executing",
    ]
    assert events.of("progress") == [
        {"value": 1, "max": 2, "prompt_id": "p1", "node": sleep.id},
        {"value": 2, "max": 2, "prompt_id": "p1", "node": sleep.id},
    ]
    assert events.events[-1] == ("executing", {"node": None, "prompt_id": "p1"})
    assert [m for m, _ in result.messages] == ["execution_start", "execution_cached", "execution_success"]
    assert set(result.timings) == set(result.executed) and all(t >= 0 for t in result.timings.values())
    assert result.meta == {
        save.id: {"node_id": save.id, "display_node": save.id, "parent_node": None, "real_node_id": save.id}
    }


def test_a_caller_progress_hook_still_sees_progress(executor: Executor, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    ctx = context(tmp_path, progress_hook=lambda value, total: seen.append((value, total)))
    g = GraphBuilder()
    g.node("TestSyncSleep", value=1, seconds=0.0, steps=3)
    run(executor, g, ["0"], ctx)
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_a_bad_return_value_is_a_clear_error(
    executor: Executor, ctx: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TestNoOp, "noop", lambda self, value: value)
    g = GraphBuilder()
    noop = g.node("TestNoOp", value=3)
    result, _ = run(executor, g, [noop], ctx)
    assert result.errors[0]["exception_message"] == (
        "TestNoOp.noop returned int; expected a tuple of 1 output(s) or a dict with 'result' and/or 'ui'"
    )


# -- cancellation, scale ----------------------------------------------------------------------------------------


def test_cancellation_between_nodes(executor: Executor, tmp_path: Path) -> None:
    checks = iter(range(100))
    ctx = context(tmp_path, cancel_check=lambda: next(checks) >= 2)
    g = GraphBuilder()
    node = g.node("TestNoOp", value=1)
    for _ in range(5):
        node = g.node("TestNoOp", value=node.out(0))
    result, events = run(executor, g, [node], ctx)
    assert result.status == "interrupted" and len(result.executed) == 2
    [interrupted] = events.of("execution_interrupted")
    assert interrupted["node_id"] == "2" and interrupted["node_type"] == "TestNoOp"
    assert interrupted["executed"] == ["0", "1"]
    assert [m for m, _ in result.messages][-1] == "execution_interrupted"


def test_cancellation_inside_a_node(executor: Executor, tmp_path: Path) -> None:
    progress: list[int] = []
    ctx = context(tmp_path, cancel_check=lambda: len(progress) >= 2, progress_hook=lambda v, t: progress.append(v))
    g = GraphBuilder()
    sleep = g.node("TestSyncSleep", value=1, seconds=0.0, steps=10)
    result, events = run(executor, g, [g.node("TestReport", value=sleep.out(0))], ctx)
    assert result.status == "interrupted" and progress == [1, 2]
    assert events.of("execution_interrupted")[0]["node_id"] == sleep.id


def test_a_ten_thousand_node_chain_runs_and_caches(ctx: RunContext) -> None:
    prompt = {"0": {"class_type": "TestNoOp", "inputs": {"value": 7}}}
    for i in range(1, 10_000):
        prompt[str(i)] = {"class_type": "TestNoOp", "inputs": {"value": [str(i - 1), 0]}}
    executor = Executor(REGISTRY)
    result = executor.execute(prompt, ["9999"], context=ctx)
    assert result.status == "success" and len(result.executed) == 10_000
    assert len(executor.cache) == executor.cache.max_entries  # the bounded LRU kept the newest entries
    again = executor.execute(prompt, ["9999"], context=ctx)
    assert again.executed == [] and "9999" in again.cached


# -- validation hands over; the executor runs what it accepted ------------------------------------------------


@pytest.mark.parametrize(
    ("node", "inputs", "ok"),
    [
        ("TestCustomValidation1", {"input1": 5, "input2": 1.0}, False),
        ("TestCustomValidation1", {"input1": "foo", "input2": 1.0}, False),
        ("TestCustomValidation1", {"input1": 5.0, "input2": 1.0}, True),
        ("TestCustomValidation5", {"input1": 0.5, "input2": 5.0}, True),
        ("TestCustomValidation5", {"input1": 0.5, "input2": 7.0}, False),
    ],
)
def test_validate_then_execute(
    executor: Executor, ctx: RunContext, node: str, inputs: dict[str, Any], ok: bool
) -> None:
    save = {"class_type": "TestSaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "v"}}
    prompt = {"1": {"class_type": node, "inputs": inputs}, "2": save}
    validation = validate_prompt(prompt, REGISTRY.specs(), node_classes=REGISTRY.classes)
    assert validation.ok is ok
    if ok:
        result, _ = run(executor, validation.prompt, validation.outputs, ctx)
        assert result.status == "success" and result.ui_outputs["2"]["images"][0]["value"] == pytest.approx(
            (inputs["input1"] + inputs["input2"]) / 2
        )
