"""The output cache (LRU by entries and estimated bytes) and the input signatures that key it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from comfyserve.engine.cache import OutputCache, buffer_bytes, measure
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.executor import Executor
from comfyserve.engine.graph import DynamicPrompt, Scheduler
from comfyserve.engine.plan import slice_calls
from comfyserve.engine.signature import Signatures, encode_constant
from tests.testpack.harness import pack_registry

REGISTRY = pack_registry()


class FakeTensor:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


class FakeTorchTensor:
    """Duck-typed like torch: no ``nbytes`` attribute here, but ``element_size()`` and ``nelement()``."""

    def element_size(self) -> int:
        return 4

    def nelement(self) -> int:
        return 1000


# -- OutputCache -----------------------------------------------------------------------------------------------


def test_lru_evicts_the_least_recently_used_by_entries() -> None:
    cache = OutputCache(max_entries=2)
    cache.put("a", [[1]], None)
    cache.put("b", [[2]], None)
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("c", [[3]], None)
    assert "b" not in cache and "a" in cache and "c" in cache and len(cache) == 2


def test_lru_evicts_by_estimated_bytes() -> None:
    cache = OutputCache(max_entries=100, max_bytes=10_000)
    cache.put("a", [[FakeTensor(4_000)]], None)
    cache.put("b", [[FakeTensor(4_000)]], None)
    assert cache.nbytes > 8_000
    cache.put("c", [[FakeTensor(4_000)]], None)
    assert "a" not in cache and {"b", "c"} <= {k for k in "bc" if k in cache} and cache.nbytes <= 10_000


def test_an_entry_larger_than_the_cache_is_not_kept() -> None:
    cache = OutputCache(max_bytes=1_000)
    cache.put("small", [[1]], None)
    assert cache.put("huge", [[FakeTensor(5_000)]], None) is False
    assert "huge" not in cache and "small" in cache


def test_a_shared_buffer_is_counted_once_and_released_with_its_last_entry() -> None:
    cache = OutputCache(max_entries=2)
    tensor = FakeTensor(1_000_000)
    cache.put("a", [[tensor]], None)
    cache.put("b", [[tensor], [tensor]], {"images": []})
    assert 1_000_000 < cache.nbytes < 1_002_000
    cache.put("c", [[1]], None)  # evicts "a"; "b" still holds the tensor
    assert cache.nbytes > 1_000_000
    cache.put("d", [[2]], None)  # evicts "b": the tensor is gone
    assert cache.nbytes < 1_000


def test_sizes_by_duck_typing() -> None:
    assert buffer_bytes(FakeTensor(64)) == 64
    assert buffer_bytes(FakeTorchTensor()) == 4000
    assert buffer_bytes("text") is None
    own, buffers = measure([[FakeTorchTensor(), {"samples": FakeTensor(10)}]], {"text": ["x" * 100]})
    assert sorted(size for _, size in buffers.values()) == [10, 4000] and own > 100


def test_get_many_and_clear() -> None:
    cache = OutputCache()
    cache.put("k1", [[1]], {"images": [1]})
    found = cache.get_many({"n1": "k1", "n2": "missing", "n3": None})
    assert list(found) == ["n1"] and found["n1"].ui == {"images": [1]}
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


# -- signatures ------------------------------------------------------------------------------------------------


def digests(prompt: dict[str, Any], roots: list[str]) -> dict[str, str | None]:
    executor = Executor(REGISTRY)
    signatures = Signatures(DynamicPrompt(prompt), lambda _, class_type: executor.plan(class_type), lambda *_: {})
    asyncio.run(signatures.ensure(roots))
    return signatures.digests


def noop(value: Any, **extra: Any) -> dict[str, Any]:
    return {"class_type": "TestNoOp", "inputs": {"value": value, **extra}}


def test_identical_subgraphs_share_keys_and_ids_do_not_matter() -> None:
    d = digests({"a": noop(1), "b": noop(["a", 0]), "x": noop(1), "y": noop(["x", 0])}, ["b", "y"])
    assert d["a"] == d["x"] and d["b"] == d["y"]
    assert d["a"] != d["b"]


def test_meta_is_ignored_but_undeclared_inputs_count() -> None:
    d = digests(
        {"a": noop(1), "b": {**noop(1), "_meta": {"title": "t"}}, "c": noop(1, upload="image")}, ["a", "b", "c"]
    )
    assert d["a"] == d["b"] and d["a"] != d["c"]


def test_constants_are_typed_and_unhashable_ones_never_hit() -> None:
    d = digests({"i": noop(1), "f": noop(1.0), "s": noop("1"), "t": noop(True), "n": noop(float("nan"))}, list("ifstn"))
    assert len({d["i"], d["f"], d["s"], d["t"]}) == 4 and d["n"] is None
    literal = digests({"u": noop(["x", 0.5, {"k": [1]}]), "v": noop(["u", 0])}, ["v"])  # a 3-item list is no link
    assert literal["u"] is not None and literal["v"] is not None
    assert encode_constant([1, {"k": [float("nan")]}]) is None and encode_constant(object()) is None


def test_an_uncacheable_producer_makes_its_consumers_uncacheable() -> None:
    prompt = {
        "a": {"class_type": "TestCustomIsChanged", "inputs": {"value": 1, "should_change": True}},
        "b": noop(["a", 0]),
    }
    assert digests(prompt, ["b"]) == {"a": None, "b": None}


def test_node_ids_are_in_the_key_only_when_the_class_asks() -> None:
    hidden = {"class_type": "TestHiddenInputs", "inputs": {"value": 1}}  # hidden UNIQUE_ID
    counter = {"class_type": "TestCallCounter", "inputs": {"value": 1}}  # NOT_IDEMPOTENT
    d = digests({"h1": hidden, "h2": hidden, "c1": counter, "c2": counter}, ["h1", "h2", "c1", "c2"])
    assert d["h1"] != d["h2"] and d["c1"] != d["c2"]


def test_the_key_text_is_injective() -> None:
    tricky = {"a": noop("x'=1"), "b": {"class_type": "TestNoOp", "inputs": {"value": "x", "value'": 1}}}
    d = digests(tricky, ["a", "b"])
    assert d["a"] != d["b"]


# -- call mapping and scheduling -------------------------------------------------------------------------------


def test_slice_calls() -> None:
    assert slice_calls({}, False) == [{}]
    assert slice_calls({"a": [1], "b": [2]}, False) == [{"a": 1, "b": 2}]
    assert slice_calls({"a": [1, 2, 3], "b": [9]}, False) == [{"a": 1, "b": 9}, {"a": 2, "b": 9}, {"a": 3, "b": 9}]
    assert slice_calls({"a": [1, 2]}, True) == [{"a": [1, 2]}]
    with pytest.raises(NodeInputError, match="input 'b' received an empty list while another input has 2 items"):
        slice_calls({"a": [1, 2], "b": []}, False)


def test_scheduler_orders_by_dependency_and_drops_dependents() -> None:
    links = {"out": ["mid"], "mid": ["leaf"], "leaf": [], "other": []}
    scheduler = Scheduler(lambda n: links[n], lambda n: False, lambda n: n == "out")
    scheduler.add("out")
    scheduler.add("other")
    assert scheduler.pop() == "leaf"
    scheduler.complete("leaf")
    assert scheduler.pop() == "mid"
    assert scheduler.drop("mid") == ["mid", "out"]
    assert scheduler.pop() == "other" and scheduler.pop() is None


def test_scheduler_finds_the_nodes_of_a_cycle() -> None:
    links = {"a": ["b"], "b": ["c"], "c": ["b"]}
    scheduler = Scheduler(lambda n: links[n], lambda n: False, lambda n: False)
    scheduler.add("a")
    assert scheduler.pop() is None
    assert sorted(scheduler.cycle()) == ["b", "c"]


def test_a_constant_without_a_text_form_is_uncacheable() -> None:
    assert digests({"big": noop(10**5000)}, ["big"]) == {"big": None}
