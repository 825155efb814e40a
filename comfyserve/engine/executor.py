"""The DAG executor: runs a validated prompt with ComfyUI's semantics (reference §1.4-§1.10).

Only the producers of the requested outputs run, each once its strong (non-lazy) inputs exist. Outputs are
cached by input signature across jobs; lazy inputs, list mapping, ``ExecutionBlocker``, node expansion and
async node functions behave as in ComfyUI. The first failure stops the prompt unless ``keep_going`` is set,
in which case only the nodes that depend on the failed one are skipped. Events carry ComfyUI's names and
payloads. Nothing recurses, so graph size is bounded by memory, not by the interpreter's stack.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import inspect
import time
from collections import OrderedDict
from collections.abc import Coroutine
from types import CoroutineType
from typing import Any

from comfyserve.engine import context as run_context
from comfyserve.engine import events
from comfyserve.engine.cache import OutputCache
from comfyserve.engine.context import RunContext
from comfyserve.engine.errors import InterruptedError_, NodeInputError
from comfyserve.engine.graph import (
    DependencyCycleError,
    DuplicateNodeError,
    DynamicPrompt,
    ExpansionLimitError,
    GraphError,
    NodeView,
    Scheduler,
)
from comfyserve.engine.graph_utils import CURRENT_CALL, ExecutionBlocker, NodeCall, is_link
from comfyserve.engine.plan import NodePlan, only, slice_calls
from comfyserve.engine.prompt_format import unwrap_literal
from comfyserve.engine.registry import NodeRegistry
from comfyserve.engine.report import EventSink, ExecutionResult, RunReport
from comfyserve.engine.returns import Part, as_returns, find_blocker, merge_outputs, merge_ui, result_of
from comfyserve.engine.signature import Signatures

__all__ = ["ExecutionResult", "Executor"]

Step = bool | Coroutine[Any, Any, bool]

MAX_INSTANCES = 256
MAX_EXPANSION_DEPTH = 1000  # expansions nested in expansions (a loop re-expands once per iteration)
MAX_CREATED_NODES = 20_000  # nodes all expansions of one job may create
ASYNC_POLL_S = 0.05  # how often cancellation is checked while only async nodes are running


class Executor:
    """Runs prompts against a registry. Keep one per process: it holds the output cache, the node instances
    (by node id and class, as ComfyUI's ``objects`` cache) and the event loop of :meth:`execute` between jobs.
    :meth:`close` closes that loop."""

    def __init__(
        self,
        registry: NodeRegistry,
        cache: OutputCache | None = None,
        *,
        max_expansion_depth: int = MAX_EXPANSION_DEPTH,
        max_created_nodes: int = MAX_CREATED_NODES,
    ) -> None:
        self.registry = registry
        self.cache = cache if cache is not None else OutputCache()
        self.max_expansion_depth = max_expansion_depth
        self.max_created_nodes = max_created_nodes
        self._plans: dict[str, NodePlan] = {}
        self._instances: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._runner: asyncio.Runner | None = None

    def execute(
        self,
        prompt: dict[str, dict[str, Any]],
        outputs: list[str],
        *,
        context: RunContext,
        prompt_id: str = "",
        on_event: EventSink | None = None,
        keep_going: bool = False,
    ) -> ExecutionResult:
        """Run ``outputs`` and their producers. Call from synchronous code, in any thread, one call at a time;
        async callers use :meth:`execute_async`. The event loop is made on the first call and reused."""
        if self._runner is None:
            # With a loop factory the runner leaves the thread's current event loop alone.
            self._runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        run = _Run(self, prompt, outputs, context, prompt_id, on_event, keep_going)
        # Each job gets a fresh copy of the caller's context, as under asyncio.run. The coroutine returns
        # nothing: the runner may repr() the main task, result included (SIGINT set-up).
        self._runner.run(run.run(), context=contextvars.copy_context())
        return run.result

    async def execute_async(
        self,
        prompt: dict[str, dict[str, Any]],
        outputs: list[str],
        *,
        context: RunContext,
        prompt_id: str = "",
        on_event: EventSink | None = None,
        keep_going: bool = False,
    ) -> ExecutionResult:
        run = _Run(self, prompt, outputs, context, prompt_id, on_event, keep_going)
        await run.run()
        return run.result

    def close(self) -> None:
        """Cancel what is left on :meth:`execute`'s event loop and close it; a later call makes a new one."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def clear(self) -> None:
        """Drop cached outputs and node instances (ComfyUI's ``free_memory``)."""
        self.cache.clear()
        self._instances.clear()

    def plan(self, class_type: str) -> NodePlan:
        """What the executor needs to know about a class, read once (again if the registry replaced it)."""
        node_class = self.registry.classes.get(class_type)
        plan = self._plans.get(class_type)
        if plan is None or plan.cls is not node_class:
            if node_class is None:
                raise KeyError(class_type)
            plan = self._plans[class_type] = NodePlan.build(node_class, self.registry.spec(class_type))
        return plan

    def instance(self, node_id: str, plan: NodePlan) -> Any:
        """The node object of ``node_id``, kept across runs (least recently used ones dropped past a bound)."""
        key = (node_id, plan.name)
        instance = self._instances.get(key)
        if instance is None:
            instance = self._instances[key] = plan.cls()
            if len(self._instances) > MAX_INSTANCES:
                self._instances.popitem(last=False)
        else:
            self._instances.move_to_end(key)
        return instance


class _Run:
    """The state of one prompt's execution."""

    def __init__(
        self,
        executor: Executor,
        prompt: dict[str, dict[str, Any]],
        outputs: list[str],
        ctx: RunContext,
        prompt_id: str,
        on_event: EventSink | None,
        keep_going: bool,
    ) -> None:
        self.executor = executor
        self.cache = executor.cache
        self.outputs = list(outputs)
        self.keep_going = keep_going
        self.dynprompt = DynamicPrompt(prompt)
        self.report = RunReport(prompt_id, self.dynprompt, on_event)
        self.result = self.report.result
        self._outer_hook = ctx.progress_hook
        self.ctx = dataclasses.replace(
            ctx,
            prompt=ctx.prompt if ctx.prompt is not None else prompt,
            progress_hook=self._progress,
            event_sink=on_event,
        )
        self.cancelled = ctx.cancel_check
        self.values: dict[str, list[list[Any]]] = {}
        self.looked_up: set[str] = set()
        self.produced: dict[str, tuple[list[list[Any]], dict[str, Any] | None]] = {}  # digest -> this run's result
        self.signatures = Signatures(self.dynprompt, self._plan_of, self._hidden_inputs)
        self.digests = self.signatures.digests
        self.plans = self.signatures.plans
        self.views: dict[str, NodeView] = {}
        self.scheduler = Scheduler(self._strong_links, self._available, self._urgent)
        self.inputs: dict[str, dict[str, list[Any]]] = {}  # inputs of running nodes, for error reports
        self.inflight: dict[str, list[Any]] = {}  # async node -> per-call results (tasks among them)
        self.finished: dict[str, list[Any]] = {}  # async node whose tasks are done, awaiting re-stage
        self.started: dict[str, float] = {}
        self.ran: set[str] = set()
        self.subgraphs: dict[str, tuple[list[Part], dict[str, Any] | None]] = {}
        self.depths: dict[str, int] = {}  # expansion nesting of ephemeral nodes
        self.created = 0

    # -- the run ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        self.report.start()
        with run_context.use(self.ctx):
            try:
                await self.signatures.ensure(self.outputs)
                self._announce_cached()
                for output in self.outputs:
                    self.scheduler.add(output)
                await self._loop()
            except GraphError as exc:
                self._fail(exc.node_id, exc)
            finally:
                await self._cancel_tasks()
        self.report.finish()

    async def _loop(self) -> None:
        scheduler = self.scheduler
        timings = self.result.timings
        while True:
            if self.inflight:
                await asyncio.sleep(0)
                self._collect_async()
            node_id = scheduler.pop()
            if node_id is None:
                if self.inflight:
                    tasks = [t for calls in self.inflight.values() for t in calls if isinstance(t, asyncio.Task)]
                    await asyncio.wait(tasks, timeout=ASYNC_POLL_S, return_when=asyncio.FIRST_COMPLETED)
                    if self.cancelled():
                        self.report.interrupted(next(iter(self.inflight)))
                        return
                    self._collect_async()
                    continue
                if scheduler.pending:
                    self._fail_cycle(scheduler.cycle())
                return
            if self.cancelled():
                self.report.interrupted(node_id)
                return
            begin = time.perf_counter()
            try:
                done = self._run_node(node_id)
                if done is not True and done is not False:
                    done = await done
            except InterruptedError_:
                self.report.interrupted(node_id)
                return
            except Exception as exc:
                self._fail(node_id, exc)
                if not self.keep_going:
                    return
                for dropped in scheduler.drop(node_id):
                    self._cancel_node(dropped)
                continue
            finally:
                if node_id in self.ran:
                    timings[node_id] = timings.get(node_id, 0.0) + time.perf_counter() - begin
            if done:
                scheduler.complete(node_id)

    def _run_node(self, node_id: str) -> Step:
        """Advance one node: True when its outputs exist, False when it waits (lazy inputs, async calls, an
        expansion's nodes), or a coroutine that decides, for the steps that must await."""
        plan = self.plans[node_id]
        if node_id in self.subgraphs:
            parts, ui = self.subgraphs.pop(node_id)
            self._finish(node_id, merge_outputs(parts, plan, self.values), ui)
            return True
        calls = self.finished.pop(node_id, None)
        if calls is not None:
            waited = time.perf_counter() - self.started.pop(node_id)
            self.result.timings[node_id] = self.result.timings.get(node_id, 0.0) + waited
            return self._complete(node_id, plan, [result_of(c) for c in calls])
        if node_id in self.values or self._lookup(node_id):
            self.report.replay(node_id)
            self.report.finished(node_id)
            return True
        display = node_id if node_id in self.dynprompt.original_prompt else self.dynprompt.get_display_node_id(node_id)
        self.report.executing(node_id, display)
        view = self.views.get(node_id) or self._view(node_id)
        self.ran.add(node_id)
        inputs, missing = self._gather(node_id, view, plan)
        self.inputs[node_id] = inputs
        if plan.has_lazy_check:
            return self._check_lazy_then_call(node_id, display, view, plan, inputs, missing)
        return self._call_and_complete(node_id, display, plan, inputs)

    async def _check_lazy_then_call(
        self,
        node_id: str,
        display: str,
        view: NodeView,
        plan: NodePlan,
        inputs: dict[str, list[Any]],
        missing: set[str] | None,
    ) -> bool:
        if await self._wait_for_lazy(node_id, view, plan, inputs, missing):
            return False
        step = self._call_and_complete(node_id, display, plan, inputs)
        return step if step is True or step is False else await step

    def _call_and_complete(self, node_id: str, display: str, plan: NodePlan, inputs: dict[str, list[Any]]) -> Step:
        calls, has_tasks = self._call(node_id, display, plan, inputs)
        if has_tasks:
            return self._await_calls(node_id, plan, calls)
        if len(calls) == 1 and type(calls[0]) is tuple and not plan.has_list_output:  # the common case
            self._finish(node_id, [[value] for value in calls[0]], None)
            return True
        return self._complete(node_id, plan, calls)

    async def _await_calls(self, node_id: str, plan: NodePlan, calls: list[Any]) -> bool:
        """Give new tasks one turn of the loop; unfinished ones park the node until they are done."""
        await asyncio.sleep(0)
        if not all(c.done() for c in calls if isinstance(c, asyncio.Task)):
            self.inflight[node_id] = calls
            self.started[node_id] = time.perf_counter()
            return False
        step = self._complete(node_id, plan, [result_of(c) for c in calls])
        return step if step is True or step is False else await step

    # -- inputs -----------------------------------------------------------------------------------------

    def _gather(self, node_id: str, view: NodeView, plan: NodePlan) -> tuple[dict[str, list[Any]], set[str] | None]:
        """Every input as a list (reference §1.7); unevaluated links are ``[None]`` and listed as missing."""
        values = self.values
        inputs: dict[str, list[Any]] = {}
        missing: set[str] | None = None
        for name, producer, slot in view.links:
            if plan.raw_links and name in plan.raw_links:
                inputs[name] = [[producer, slot]]
                continue
            produced = values.get(producer)
            if produced is None:
                inputs[name] = [None]
                missing = missing or set()
                missing.add(name)
            elif slot < len(produced):
                inputs[name] = produced[slot]
            else:
                raise NodeInputError(
                    f"input {name!r} links to output {slot} of node {producer}, "
                    f"which produced {len(produced)} output(s)"
                )
        declared = plan.declared
        for name, value in view.constants:
            if name in declared:
                inputs[name] = [unwrap_literal(value)]
        if plan.hidden:
            inputs.update(self._hidden_inputs(node_id, plan))
        return inputs, missing

    def _hidden_inputs(self, node_id: str, plan: NodePlan) -> dict[str, list[Any]]:
        hidden: dict[str, list[Any]] = {}
        for name, kind in plan.hidden:
            if kind == "PROMPT":
                hidden[name] = [self.ctx.prompt]
            elif kind == "DYNPROMPT":
                hidden[name] = [self.dynprompt]
            elif kind == "EXTRA_PNGINFO":
                hidden[name] = [self.ctx.extra_pnginfo]
            elif kind == "UNIQUE_ID":
                hidden[name] = [node_id]
            elif kind in ("AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"):
                hidden[name] = [None]
        return hidden

    async def _wait_for_lazy(
        self, node_id: str, view: NodeView, plan: NodePlan, inputs: dict[str, list[Any]], missing: set[str] | None
    ) -> bool:
        """Ask ``check_lazy_status`` which unevaluated inputs it needs; schedule them and return True if any."""
        check = self.executor.instance(node_id, plan).check_lazy_status
        wanted: dict[str, None] = {}
        for kwargs in slice_calls(inputs, plan.input_is_list):
            if find_blocker(kwargs, plan.input_is_list) is not None:
                continue
            names = check(**only(kwargs, plan.lazy_check_params))
            if inspect.isawaitable(names):
                names = await names
            if isinstance(names, list | tuple):
                wanted.update((n, None) for n in names if isinstance(n, str))
        needed = [n for n in wanted if n not in inputs or (missing is not None and n in missing)]
        producers = {name: producer for name, producer, _ in view.links}
        for name in needed:
            if name not in producers:
                raise NodeInputError(f"node {node_id} says it needs input {name!r}, but nothing is linked to it")
            self.scheduler.link(producers[name], node_id)
        if needed:
            self.scheduler.requeue(node_id)
        return bool(needed)

    # -- calling and results ----------------------------------------------------------------------------

    def _call(self, node_id: str, display: str, plan: NodePlan, inputs: dict[str, list[Any]]) -> tuple[list[Any], bool]:
        """Call the node function once per list-mapped call; coroutines become tasks that run concurrently
        (the flag says whether there are any)."""
        function = getattr(self.executor.instance(node_id, plan), plan.function)
        calls: list[Any] = []
        has_tasks = False
        for index, kwargs in enumerate(slice_calls(inputs, plan.input_is_list)):
            if index and self.cancelled():
                raise InterruptedError_("the job was cancelled")
            blocker = find_blocker(kwargs, plan.input_is_list)
            if blocker is not None:
                if blocker.message is not None:
                    self.report.blocked(node_id, plan.name, blocker.message)
                calls.append(ExecutionBlocker(None))  # reported once: what it blocks passes on a silent one
                continue
            token = CURRENT_CALL.set(NodeCall(node_id, display, index))
            try:
                returned = function(**kwargs)
                if isinstance(returned, CoroutineType):
                    returned = asyncio.ensure_future(returned)
                    has_tasks = True
            finally:
                CURRENT_CALL.reset(token)
            calls.append(returned)
        return calls, has_tasks

    def _complete(self, node_id: str, plan: NodePlan, calls: list[Any]) -> Step:
        """Turn the calls' return values into outputs and UI, or expand the node's subgraphs."""
        parts: list[Part] = []
        uis: list[dict[str, Any]] = []
        new_nodes: list[str] = []
        for returned in calls:
            if isinstance(returned, dict):
                if returned.get("ui"):
                    uis.append(returned["ui"])
                if "expand" in returned:
                    parts.append((True, as_returns(returned.get("result", ()), plan)))
                    new_nodes += self._add_subgraph(node_id, returned["expand"])
                elif "result" in returned:
                    parts.append((False, as_returns(returned["result"], plan)))
            else:
                parts.append((False, as_returns(returned, plan)))
        ui = merge_ui(uis)
        if not new_nodes and not any(is_graph for is_graph, _ in parts):
            self._finish(node_id, merge_outputs(parts, plan, self.values), ui)
            return True
        return self._expand(node_id, parts, new_nodes, ui)

    async def _expand(self, node_id: str, parts: list[Part], new_nodes: list[str], ui: dict[str, Any] | None) -> bool:
        """Schedule an expansion's output nodes and the nodes its result links to; the expanding node waits."""
        if ui:
            self.report.executed(node_id, ui)
        self.subgraphs[node_id] = (parts, ui)
        links = [value[0] for is_graph, returns in parts if is_graph for value in returns if is_link(value)]
        await self.signatures.ensure([*new_nodes, *links])
        for new_id in new_nodes:
            if self.plans[new_id].output_node:
                self.scheduler.add(new_id)
        for producer in links:
            self.scheduler.link(producer, node_id)
        self.scheduler.requeue(node_id)
        return False

    def _add_subgraph(self, node_id: str, graph: Any) -> list[str]:
        """Add an expansion's nodes as ephemeral nodes of ``node_id``; returns their ids."""
        if not isinstance(graph, dict) or not all(
            isinstance(n, dict) and isinstance(n.get("class_type"), str) for n in graph.values()
        ):
            raise TypeError(f"node {node_id} returned an expansion that is not a dict of nodes with a class_type")
        if self.cancelled():
            raise InterruptedError_("the job was cancelled")
        depth = self.depths.get(node_id, 0) + 1
        self.created += len(graph)
        executor = self.executor
        if depth > executor.max_expansion_depth or self.created > executor.max_created_nodes:
            limit = (
                f"expansions nested {depth} deep (the limit is {executor.max_expansion_depth})"
                if depth > executor.max_expansion_depth
                else f"{self.created} nodes created by expansion (the limit is {executor.max_created_nodes} per job)"
            )
            raise ExpansionLimitError(node_id, f"Node {node_id} stopped: {limit}; does a loop never end?")
        for new_id in graph:
            if self.dynprompt.has_node(new_id):
                raise DuplicateNodeError(
                    node_id,
                    f"Attempt to add duplicate node {new_id}. Ensure node ids are unique and deterministic "
                    "or use GraphBuilder.",
                )
        for new_id, new_node in graph.items():
            self.dynprompt.add_ephemeral_node(new_id, new_node, node_id, new_node.get("override_display_id", node_id))
            self.depths[new_id] = depth
        return list(graph)

    def _finish(self, node_id: str, outputs: list[list[Any]], ui: dict[str, Any] | None) -> None:
        self.values[node_id] = outputs
        self.inputs.pop(node_id, None)
        self.result.executed.append(node_id)
        digest = self.digests.get(node_id)
        if digest is not None:
            self.cache.put(digest, outputs, ui or None)
            self.produced[digest] = (outputs, ui or None)
        if ui and node_id not in self.result.ui_outputs:
            self.report.executed(node_id, ui)
        self.report.finished(node_id)

    # -- cache ------------------------------------------------------------------------------------------

    def _lookup(self, node_id: str) -> bool:
        """Serve a node from an identical node of this run or, if not looked up yet, from the cache (every
        node known at the start was looked up then, so only this run's results can be new)."""
        digest = self.digests.get(node_id)
        if digest is None:
            return False
        made = self.produced.get(digest)
        if made is not None:
            self._take(node_id, *made)
            return True
        if node_id in self.looked_up:
            return False
        self.looked_up.add(node_id)
        entry = self.cache.get(digest)
        if entry is None:
            return False
        self._take(node_id, entry.outputs, entry.ui)
        return True

    def _take(self, node_id: str, outputs: list[list[Any]], ui: dict[str, Any] | None) -> None:
        self.values[node_id] = outputs
        self.result.cached.append(node_id)
        if ui:
            self.report.record_ui(node_id, ui)

    def _announce_cached(self) -> None:
        """Look up every node about to be considered, and announce the hits (``execution_cached``)."""
        hits = self.cache.get_many(self.digests)
        self.looked_up.update(self.digests)
        self.result.cached.extend(hits)
        values = self.values
        for node_id, (outputs, ui, _, _) in hits.items():  # _take, inlined: this runs for every cached node
            values[node_id] = outputs
            if ui:
                self.report.record_ui(node_id, ui)
        self.report.announce_cached()

    # -- graph callbacks --------------------------------------------------------------------------------

    def _plan_of(self, node_id: str, class_type: str) -> NodePlan:
        try:
            return self.executor.plan(class_type)
        except KeyError:
            raise GraphError(node_id, f"node {node_id} has an unknown class_type {class_type!r}") from None
        except Exception as exc:
            raise GraphError(node_id, f"node {node_id} ({class_type}) cannot run: {exc}") from exc

    def _view(self, node_id: str) -> NodeView:
        view = self.views.get(node_id)
        if view is None:
            view = self.views[node_id] = NodeView.of(self.dynprompt.get_node(node_id), self.plans[node_id].lazy)
        return view

    def _strong_links(self, node_id: str) -> tuple[str, ...]:
        return (self.views.get(node_id) or self._view(node_id)).strong

    def _available(self, node_id: str) -> bool:
        return node_id in self.values or self._lookup(node_id)

    def _urgent(self, node_id: str) -> bool:
        plan = self.plans[node_id]
        return plan.output_node or plan.is_async

    # -- async ------------------------------------------------------------------------------------------

    def _collect_async(self) -> None:
        for node_id, calls in list(self.inflight.items()):
            if all(c.done() for c in calls if isinstance(c, asyncio.Task)):
                del self.inflight[node_id]
                self.finished[node_id] = calls
                self.scheduler.requeue(node_id)

    def _cancel_node(self, node_id: str) -> None:
        for call in self.inflight.pop(node_id, ()):
            if isinstance(call, asyncio.Task):
                call.cancel()

    async def _cancel_tasks(self) -> None:
        tasks = [c for calls in (*self.inflight.values(), *self.finished.values()) for c in calls]
        tasks = [t for t in tasks if isinstance(t, asyncio.Task)]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- failures and progress -------------------------------------------------------------------------

    def _progress(self, value: int, total: int) -> None:
        self.report.progress(value, total)
        if self._outer_hook is not None:
            self._outer_hook(value, total)

    def _fail(self, node_id: str, exc: Exception) -> None:
        """Report ``exc`` as ComfyUI does: on the node of the original prompt the failing node comes from."""
        inputs = self.inputs.pop(node_id, None)
        if inputs is not None:
            hidden = {name for name, _ in self.plans[node_id].hidden}
            inputs = {name: values for name, values in inputs.items() if name not in hidden}
        details = events.error_details(exc, inputs)
        if isinstance(exc, GraphError):
            details["traceback"] = []
        self.report.error(self.dynprompt.get_real_node_id(node_id), details, list(self.values))

    def _fail_cycle(self, cycle: list[str]) -> None:
        """Nothing can run and nodes still wait: an expansion made a cycle. Blame the expanding node."""
        display = self.dynprompt.get_display_node_id
        blamed = next((display(n) for n in cycle if display(n) != n), cycle[0] if cycle else "")
        self._fail(blamed, DependencyCycleError(blamed, cycle))
