"""Prompt weights, token windows and CLIPTextEncode / CLIPSetLastLayer as ComfyUI computes them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from comfyserve.models.checkpoint import load_checkpoint
from comfyserve.models.prompt import (
    END_TOKEN,
    START_TOKEN,
    Windowing,
    clip_tokenizer,
    empty_window,
    parse_weights,
    token_windows,
)
from comfyserve.models.text import computed_in
from comfyserve.nodes.conditioning import (
    CLIPSetLastLayer,
    CLIPTextEncode,
    ConditioningAverage,
    ConditioningCombine,
    ConditioningSetTimestepRange,
    ConditioningZeroOut,
)
from tests.unit.models_fixtures import SD1, SDXL, no_network, tiny_models  # noqa: F401


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("a (cat:1.2) dog", [("a ", 1.0), ("cat", 1.2), (" dog", 1.0)]),
        ("(cat)", [("cat", pytest.approx(1.1))]),
        ("((cat))", [("cat", pytest.approx(1.21))]),
        ("((cat:1.5))", [("cat", 1.5)]),
        ("(a (b:0.5) c)", [("a ", pytest.approx(1.1)), ("b", 0.5), (" c", pytest.approx(1.1))]),
        ("[cat]", [("[cat]", 1.0)]),
        ("\\(cat\\) (dog:2)", [("(cat) ", 1.0), ("dog", 2.0)]),
        ("(time: 12:30)", [("time: 12", 30.0)]),  # the last colon wins, as in ComfyUI
        ("(ratio 4:3x)", [("ratio 4:3x", pytest.approx(1.1))]),
        ("(open", [("(open", 1.0)]),
        ("(x:1e1)", [("x", 10.0)]),
    ],
)
def test_prompt_weights(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_weights(text) == expected


def _fake_windowing(pad: int = END_TOKEN) -> Windowing:
    return Windowing(lambda segment: [len(word) for word in segment.split()], pad)


def test_short_prompt_is_one_padded_window() -> None:
    (window,) = token_windows("ab (cde:1.5)", _fake_windowing(pad=0))
    assert window[:4] == [(START_TOKEN, 1.0), (2, 1.0), (3, 1.5), (END_TOKEN, 1.0)]
    assert window[4:] == [(0, 1.0)] * 73


def test_long_prompts_go_to_77_token_windows_keeping_short_segments_whole() -> None:
    text = " ".join(["x"] * 70) + " (" + " ".join(["y"] * 7) + ":1.3)"
    first, second = token_windows(text, _fake_windowing())
    assert len(first) == len(second) == 77
    assert first[71] == (END_TOKEN, 1.0) and first[72:] == [(END_TOKEN, 1.0)] * 5
    assert second[:9] == [(START_TOKEN, 1.0)] + [(1, 1.3)] * 7 + [(END_TOKEN, 1.0)]


def test_a_long_segment_is_split_across_windows() -> None:
    windows = token_windows(" ".join(["x"] * 80), _fake_windowing())
    assert [sum(t == 1 for t, _ in w) for w in windows] == [75, 5]
    assert windows[0][-1] == (END_TOKEN, 1.0)


@pytest.mark.usefixtures("no_network")
def test_bundled_vocabulary_gives_clip_token_ids() -> None:
    assert clip_tokenizer()("a photo of a cat") == [320, 1125, 539, 320, 2368]


@pytest.mark.usefixtures("no_network")
def test_sd1_encoding_applies_weights_against_the_empty_prompt(tiny_models: Path) -> None:  # noqa: F811
    _, clip, _ = load_checkpoint(tiny_models / SD1)
    ((cond, extras),) = CLIPTextEncode().encode(clip, "a (cat:1.5)")[0]
    assert cond.shape == (1, 77, 16) and extras["pooled_output"].shape == (1, 16)
    encoder = clip.encoders[0].module
    ids = [START_TOKEN, *clip_tokenizer()("a "), *clip_tokenizer()("cat"), END_TOKEN]
    ids += [END_TOKEN] * (77 - len(ids))
    with torch.no_grad(), computed_in(encoder, torch.float32):
        plain, empty = encoder(input_ids=torch.tensor([ids, empty_window(END_TOKEN)])).last_hidden_state
    expected = plain.clone()
    expected[2] = (plain[2] - empty[2]) * 1.5 + empty[2]
    torch.testing.assert_close(cond[0], expected)


@pytest.mark.usefixtures("no_network")
def test_clip_set_last_layer_takes_the_normed_hidden_state(tiny_models: Path) -> None:  # noqa: F811
    _, clip, _ = load_checkpoint(tiny_models / SD1)
    (penultimate,) = CLIPSetLastLayer().set_last_layer(clip, -2)
    assert (clip.stop_at_layer, penultimate.stop_at_layer) == (-1, -2)
    cond = CLIPTextEncode().encode(penultimate, "a cat")[0][0][0]
    ids = torch.tensor([[START_TOKEN, 320, 2368, END_TOKEN] + [END_TOKEN] * 73])
    encoder = clip.encoders[0]
    with torch.no_grad(), computed_in(encoder.module, torch.float32):
        hidden = encoder.module(input_ids=ids, output_hidden_states=True).hidden_states[-2]
        torch.testing.assert_close(cond, encoder.final_layer_norm(hidden))
    deepest = CLIPTextEncode().encode(CLIPSetLastLayer().set_last_layer(clip, -24)[0], "a cat")[0][0][0]
    torch.testing.assert_close(deepest, CLIPTextEncode().encode(clip, "a cat")[0][0][0])


@pytest.mark.usefixtures("no_network")
def test_sdxl_concatenates_both_encoders_and_pools_from_bigg(tiny_models: Path) -> None:  # noqa: F811
    _, clip, _ = load_checkpoint(tiny_models / SDXL)
    long_prompt = "a photo of a cat " * 20
    ((cond, extras),) = CLIPTextEncode().encode(clip, long_prompt)[0]
    assert cond.shape == (1, 154, 8 + 16)
    assert extras["pooled_output"].shape == (1, 16)
    windows = token_windows(long_prompt, Windowing(clip_tokenizer(), END_TOKEN))
    ids_l = torch.tensor([[token for token, _ in window] for window in windows])
    with torch.no_grad(), computed_in(clip.encoders[0].module, torch.float32):
        hidden_l = clip.encoders[0].module(input_ids=ids_l, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(cond[0, :, :8], hidden_l.reshape(-1, 8))


@pytest.mark.usefixtures("no_network")
def test_text_encoders_are_kept_in_fp16_and_computed_in_fp32(tiny_models: Path) -> None:  # noqa: F811
    """ComfyUI keeps text encoders in fp16 on the CPU and runs them in fp32 (its manual_cast ops)."""
    _, clip, _ = load_checkpoint(tiny_models / SDXL)
    assert {p.dtype for encoder in clip.encoders for p in encoder.module.parameters()} == {torch.float16}
    ((cond, extras),) = CLIPTextEncode().encode(clip, "a cat")[0]
    assert cond.dtype == torch.float32 and extras["pooled_output"].dtype == torch.float32
    assert {p.dtype for encoder in clip.encoders for p in encoder.module.parameters()} == {torch.float16}
    ids = torch.tensor([[START_TOKEN, 320, 2368, END_TOKEN] + [END_TOKEN] * 73])
    upcast = copy.deepcopy(clip.encoders[0].module).float()  # fp16-rounded weights, fp32 arithmetic
    with torch.no_grad():
        expected = upcast(input_ids=ids, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(cond[0, :, :8], expected[0], rtol=0, atol=0)


def test_conditioning_nodes() -> None:
    a: list[list[Any]] = [[torch.ones(1, 77, 4), {"pooled_output": torch.ones(1, 2)}]]
    b: list[list[Any]] = [[torch.full((1, 154, 4), 3.0), {"pooled_output": torch.zeros(1, 2)}]]
    assert len(ConditioningCombine().combine(a, b)[0]) == 2
    ((avg, extras),) = ConditioningAverage().addWeighted(a, b, 0.25)[0]
    torch.testing.assert_close(avg, torch.full((1, 77, 4), 0.25 * 1 + 0.75 * 3))
    torch.testing.assert_close(extras["pooled_output"], torch.full((1, 2), 0.25))
    ((zero, zextras),) = ConditioningZeroOut().zero_out(a)[0]
    assert not zero.any() and not zextras["pooled_output"].any() and a[0][1]["pooled_output"].all()
    ((_, ranged),) = ConditioningSetTimestepRange().set_range(a, 0.2, 0.7)[0]
    assert (ranged["start_percent"], ranged["end_percent"]) == (0.2, 0.7) and "start_percent" not in a[0][1]


@pytest.mark.usefixtures("no_network")
def test_an_embedding_casts_the_rows_it_looked_up_not_its_table(tiny_models: Path) -> None:  # noqa: F811
    _, clip, _ = load_checkpoint(tiny_models / SDXL)
    module = clip.encoders[1].module
    seen: list[tuple[torch.dtype, torch.dtype]] = []
    table = module.get_input_embeddings()
    handle = table.register_forward_hook(lambda layer, _args, out: seen.append((layer.weight.dtype, out.dtype)))
    try:
        with torch.no_grad(), computed_in(module, torch.float32):
            hidden = module(input_ids=torch.tensor([[START_TOKEN, 320, END_TOKEN]])).last_hidden_state
    finally:
        handle.remove()
    assert seen == [(torch.float16, torch.float16)]  # looked up in the fp16 table; the rows are cast after
    assert hidden.dtype == torch.float32
