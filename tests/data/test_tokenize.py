"""Tokenisation: masking, truncation reports, pt blocks, packing, cache, fast = reference."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tuneforge.data.tokenize as tokenize_module
from tuneforge.config.run import RunConfig
from tuneforge.data.records import (
    ChatExample,
    EmbeddingExample,
    KTOExample,
    Location,
    Message,
    PreferenceExample,
    TextExample,
    ToolCall,
)
from tuneforge.data.segments import added_token_pattern, encode_texts, encode_texts_plainly
from tuneforge.data.tokenize import (
    IGNORE_INDEX,
    TokenizedData,
    TokenizeOptions,
    infer_seqlen,
    render_preview,
    tokenize_examples,
)
from tuneforge.errors import ConfigError, DataError, UnsupportedError

TOKENIZERS = ["tiny_tokenizer", "smollm2_tokenizer"]


def chat(*turns: str | Message, system: str | None = None, line: int = 1,
         tools: str | None = None) -> ChatExample:
    """A ChatExample from alternating user/assistant texts (or ready Messages)."""
    messages = tuple(
        t if isinstance(t, Message) else Message("user" if i % 2 == 0 else "assistant", t)
        for i, t in enumerate(turns)
    )
    return ChatExample(messages, Location("data.jsonl", line), system=system, tools=tools)


SAMPLES = [
    chat("Hello!", "Hi there."),
    chat("What is the capital of France?", "Paris.", "And of China?", "北京是中国的首都。",
         system="You are a helpful assistant."),
    chat("你好，今天怎么样？", "很好，谢谢。", "请用中文回答这个问题。", "好的。", "谢谢",
         "不客气！"),
    chat("  spaced  ", "\nnew lines\n\n", system="系统：请简短回答。"),
    chat("Weather in Paris?",
         Message("assistant", "", tool_calls=(ToolCall("get_weather", '{"city": "Paris"}'),)),
         Message("tool", '{"weather": "sunny"}'), Message("assistant", "It is sunny."),
         tools='[{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}]'),
    chat("Special <|im_end|> text in content", "and <|im_start|> here"),
    chat("first question", Message("user", "second question"), Message("assistant", "answer")),
]


def learned_runs(data: TokenizedData, tokenizer: Any, row: int = 0, prefix: str = "") -> list[str]:
    """The learned stretches of one row, decoded."""
    ids = data.columns[prefix + "input_ids"][row].tolist()
    labels = data.columns[prefix + "labels"][row].tolist()
    runs = itertools.groupby(zip(ids, labels, strict=True), key=lambda p: p[1] != IGNORE_INDEX)
    return [tokenizer.decode([i for i, _ in run]) for learned, run in runs if learned]


def template_messages(example: ChatExample) -> list[dict[str, Any]]:
    system = [{"role": "system", "content": example.system}] if example.system else []
    return system + [m.to_dict() for m in example.messages]


@pytest.mark.parametrize(("fixture", "template"), [
    ("tiny_tokenizer", None), ("smollm2_tokenizer", None), ("tiny_tokenizer", "qwen"),
    ("smollm2_tokenizer", "llama3"),
])
def test_fast_path_equals_reference_and_the_templates_own_ids(
    fixture: str, template: str | None, request: pytest.FixtureRequest
) -> None:
    tokenizer = request.getfixturevalue(fixture)
    options = TokenizeOptions(max_length=4096, template=template)
    examples = SAMPLES * 3
    fast = tokenize_examples(examples, tokenizer, options)
    reference = tokenize_examples(examples, tokenizer, options, reference=True)
    assert len(fast) == len(reference) == len(examples)
    assert list(fast) == list(reference)
    for row, example in zip(fast, examples, strict=True):
        if template or any(m.tool_calls for m in example.messages) or example.tools:
            continue  # not the jinja's own rendering; compared to the reference above
        messages = template_messages(example)
        ids = tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]
        assert row["input_ids"] == ids
        # Labels as prefix renders count them: a turn runs from the end of the conversation
        # before it plus the generation prompt to the end of the conversation through it.
        expected = [IGNORE_INDEX] * len(ids)
        for k in (k for k, m in enumerate(messages) if m["role"] == "assistant"):
            a = len(tokenizer.apply_chat_template(messages[:k], add_generation_prompt=True,
                                                  tokenize=True)["input_ids"])
            b = len(tokenizer.apply_chat_template(messages[: k + 1], tokenize=True)["input_ids"])
            expected[a:b] = ids[a:b]
        assert row["labels"] == expected


@pytest.mark.parametrize("fixture", TOKENIZERS)
def test_segment_tokenisation_equals_whole_text_tokenisation(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    tokenizer = request.getfixturevalue(fixture)
    backend = tokenizer.backend_tokenizer
    pattern = added_token_pattern(backend)
    assert pattern is not None
    texts = [
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi<|im_end|>\n",
        "no special tokens at all, 中文也可以",
        "<|im_end|><|im_end|>\n\n<|im_start|>  spaced\n<|endoftext|>tail",
        "",
    ]
    for text in texts:
        pieces = [p for p in pattern.split(text) if p]
        per_segment = [i for p in pieces for i in backend.encode(p, add_special_tokens=False).ids]
        assert per_segment == backend.encode(text, add_special_tokens=False).ids
    fast, plain = encode_texts(texts * 2, tokenizer), encode_texts_plainly(texts * 2, tokenizer)
    for name in ("ids", "starts", "offsets"):
        assert np.array_equal(getattr(fast, name), getattr(plain, name))


@pytest.mark.parametrize("fixture", TOKENIZERS)
def test_every_assistant_turn_is_learned_with_its_end_of_turn(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    tokenizer = request.getfixturevalue(fixture)
    data = tokenize_examples([SAMPLES[1]], tokenizer, TokenizeOptions())
    assert learned_runs(data, tokenizer) == [
        "Paris.<|im_end|>\n", "北京是中国的首都。<|im_end|>\n"
    ]


def test_mask_history_learns_only_the_last_turn(tiny_tokenizer: Any) -> None:
    data = tokenize_examples([SAMPLES[1]], tiny_tokenizer, TokenizeOptions(mask_history=True))
    assert learned_runs(data, tiny_tokenizer) == ["北京是中国的首都。<|im_end|>\n"]


def test_train_on_prompt_learns_every_token(tiny_tokenizer: Any) -> None:
    data = tokenize_examples([SAMPLES[1]], tiny_tokenizer, TokenizeOptions(train_on_prompt=True))
    assert data[0]["labels"] == data[0]["input_ids"]


def test_mask_history_with_train_on_prompt_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        TokenizeOptions(mask_history=True, train_on_prompt=True)


def test_message_weights_override_the_policy(tiny_tokenizer: Any) -> None:
    example = chat("q1", Message("assistant", "never", weight=0), "q2",
                   Message("assistant", "always", weight=1), "q3", "last")
    default = tokenize_examples([example], tiny_tokenizer, TokenizeOptions())
    assert learned_runs(default, tiny_tokenizer) == ["always<|im_end|>\n", "last<|im_end|>\n"]
    history = tokenize_examples([example], tiny_tokenizer, TokenizeOptions(mask_history=True))
    assert learned_runs(history, tiny_tokenizer) == ["always<|im_end|>\n", "last<|im_end|>\n"]
    prompt = tokenize_examples([example], tiny_tokenizer, TokenizeOptions(train_on_prompt=True))
    assert "never" not in "".join(learned_runs(prompt, tiny_tokenizer))
    assert "q1" in learned_runs(prompt, tiny_tokenizer)[0]


@pytest.mark.parametrize(("lengths", "expected"), [
    ((3000, 2000, 1000), (600, 400)), ((2000, 3000, 1000), (400, 600)),
    ((1000, 100, 1000), (900, 100)), ((100, 1000, 1000), (100, 900)),
    ((100, 500, 1000), (100, 500)), ((500, 100, 1000), (500, 100)), ((10, 10, 1000), (10, 10)),
])
def test_infer_seqlen_matches_llamafactory(
    lengths: tuple[int, int, int], expected: tuple[int, int]
) -> None:
    assert infer_seqlen(*lengths) == expected


def test_mask_history_truncation_keeps_the_last_turn_first(tiny_tokenizer: Any) -> None:
    long_answer = "the quick brown fox " * 30
    example = chat("q1", long_answer, "q2", "the last answer")
    data = tokenize_examples([example], tiny_tokenizer,
                             TokenizeOptions(max_length=64, mask_history=True))
    assert learned_runs(data, tiny_tokenizer) == ["the last answer<|im_end|>\n"]
    assert len(data[0]["input_ids"]) == 64


def test_truncation_keeps_and_counts_drops_and_names_locations(tiny_tokenizer: Any) -> None:
    long_prompt = "the quick brown fox " * 40
    examples = [
        chat("short", "fine", line=1),
        chat(long_prompt, "kept answer", line=2),
        chat(long_prompt, Message("assistant", "unlearned", weight=0), "q", "cut away", line=3),
        chat("q", Message("assistant", "nothing", weight=0), line=4),
    ]
    data = tokenize_examples(examples, tiny_tokenizer, TokenizeOptions(max_length=64))
    report = data.report
    assert (report.total, report.kept, len(data)) == (4, 2, 2)
    assert all(len(row["input_ids"]) <= 64 for row in data)
    assert learned_runs(data, tiny_tokenizer, row=1) == ["kept answer<|im_end|>\n"]
    assert [(n.loc.line, n.reason) for n in report.truncated] == [(2, "truncated")]
    assert [(n.loc.line, n.reason) for n in report.dropped] == [
        (3, "truncated_away"), (4, "no_learned_tokens")
    ]
    assert report.reasons == {"truncated": 1, "truncated_away": 1, "no_learned_tokens": 1}
    assert report.to_dict()["dropped"][0]["file"] == "data.jsonl"


def test_pt_texts_end_with_eos_and_fill_whole_blocks(tiny_tokenizer: Any) -> None:
    texts = ["Hello there, how are you today?", "你好，今天怎么样？", "Paris is the capital."]
    examples = [TextExample(t, Location("wiki.txt", i + 1)) for i, t in enumerate(texts)]
    data = tokenize_examples(examples, tiny_tokenizer, TokenizeOptions(max_length=8))
    eos = tiny_tokenizer.eos_token_id
    stream = [
        i for t in texts for i in [*tiny_tokenizer(t, add_special_tokens=False)["input_ids"], eos]
    ]
    whole = len(stream) // 8 * 8
    assert [i for row in data for i in row["input_ids"]] == stream[:whole]
    assert all(len(row["input_ids"]) == 8 and row["labels"] == row["input_ids"] for row in data)
    assert data.report.remainder_tokens == len(stream) - whole


def test_pt_text_shorter_than_a_block_is_one_short_block(tiny_tokenizer: Any) -> None:
    # LLaMA-Factory keeps it too: two short samples (the REST seed's example) still train
    examples = [TextExample("用户：你好\n助手：你好！", Location("train.json", 1)),
                TextExample("Hi there.", Location("train.json", 1))]
    data = tokenize_examples(examples, tiny_tokenizer, TokenizeOptions(max_length=2048))
    assert len(data) == 1
    assert len(data[0]["input_ids"]) == data.report.tokens > 0
    assert data.report.remainder_tokens == 0


def test_packing_resets_position_ids_per_sample_and_wastes_no_padding(tiny_tokenizer: Any) -> None:
    examples = SAMPLES * 4
    options = TokenizeOptions(max_length=96)
    plain = tokenize_examples(examples, tiny_tokenizer, options)
    packed = tokenize_examples(examples, tiny_tokenizer, TokenizeOptions(max_length=96,
                                                                          packing=True))
    assert len(packed) < len(plain)
    assert packed.num_tokens == plain.num_tokens  # nothing padded, nothing lost
    samples = sorted(tuple(row["input_ids"]) for row in plain)
    unpacked = []
    for row in packed:
        assert len(row["input_ids"]) <= 96
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        for a, b in zip(starts, [*starts[1:], len(row["position_ids"])], strict=True):
            assert row["position_ids"][a:b] == list(range(b - a))
            assert row["labels"][a] == IGNORE_INDEX
            unpacked.append(tuple(row["input_ids"][a:b]))
    assert sorted(unpacked) == samples


def test_cached_result_is_identical_and_reused(
    tiny_tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = TokenizeOptions(max_length=48)
    first = tokenize_examples(SAMPLES, tiny_tokenizer, options, tmp_path)
    entries = list((tmp_path / "tokenized").iterdir())
    assert len(entries) == 1 and not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("tokenised again instead of reading the cache")

    monkeypatch.setattr(tokenize_module, "_tokenize_chat", no_work)
    second = tokenize_examples(SAMPLES, tiny_tokenizer, options, tmp_path)
    assert list(second) == list(first)
    assert second.report == first.report and second.template == first.template
    monkeypatch.undo()
    tokenize_examples(SAMPLES, tiny_tokenizer, TokenizeOptions(max_length=49), tmp_path)
    tokenize_examples(SAMPLES[:-1], tiny_tokenizer, options, tmp_path)
    assert len(list((tmp_path / "tokenized").iterdir())) == 3  # options and records are keyed


def test_broken_cache_entry_is_tokenised_again(tiny_tokenizer: Any, tmp_path: Path) -> None:
    options = TokenizeOptions()
    first = tokenize_examples(SAMPLES, tiny_tokenizer, options, tmp_path)
    (entry,) = (tmp_path / "tokenized").iterdir()
    (entry / "labels.values.npy").unlink()
    again = tokenize_examples(SAMPLES, tiny_tokenizer, options, tmp_path)
    assert list(again) == list(first) and (entry / "labels.values.npy").is_file()


def test_pairwise_shares_the_prompt_and_learns_only_the_answers(tiny_tokenizer: Any) -> None:
    example = PreferenceExample(
        prompt=(Message("user", "Hello!"), Message("assistant", "Hi."), Message("user", "Poem?")),
        chosen=Message("assistant", "The sea is wide."),
        rejected=Message("assistant", "No."),
        loc=Location("dpo.json", 1, 0),
    )
    data = tokenize_examples([example], tiny_tokenizer, TokenizeOptions())
    row = data[0]
    prompt_len = len(row["chosen_input_ids"]) - len(tiny_tokenizer("The sea is wide.<|im_end|>\n")
                                                    ["input_ids"])
    assert row["chosen_input_ids"][:prompt_len] == row["rejected_input_ids"][:prompt_len]
    assert learned_runs(data, tiny_tokenizer, prefix="chosen_") == ["The sea is wide.<|im_end|>\n"]
    assert learned_runs(data, tiny_tokenizer, prefix="rejected_") == ["No.<|im_end|>\n"]


def test_kto_learns_the_final_answer_and_keeps_the_tag(tiny_tokenizer: Any) -> None:
    examples = [
        KTOExample((Message("user", "a"), Message("assistant", "b"), Message("user", "c"),
                    Message("assistant", "d")), label=label, loc=Location("kto.json", i, i))
        for i, label in enumerate([True, False])
    ]
    data = tokenize_examples(examples, tiny_tokenizer, TokenizeOptions())
    assert [row["kto_tag"] for row in data] == [True, False]
    assert learned_runs(data, tiny_tokenizer) == ["d<|im_end|>\n"]


def test_render_preview_flags_learned_text(tiny_tokenizer: Any) -> None:
    pieces = render_preview(SAMPLES[0], tiny_tokenizer, TokenizeOptions())
    assert [(text, learned) for text, learned in pieces if learned] == [
        ("Hi there.<|im_end|>\n", True)
    ]
    assert "".join(text for text, _ in pieces).startswith("<|im_start|>system\n")
    with pytest.raises(DataError, match="no_learned_tokens"):
        render_preview(chat("q", Message("assistant", "x", weight=0)), tiny_tokenizer,
                       TokenizeOptions())


def test_options_come_from_the_run_config() -> None:
    config = RunConfig.model_validate({
        "model": {"template": "chatml", "default_system": "Be brief."},
        "data": {"max_length": 512, "mask_history": True, "packing": True},
    })
    assert TokenizeOptions.from_config(config) == TokenizeOptions(
        max_length=512, template="chatml", default_system="Be brief.", mask_history=True,
        packing=True,
    )


def test_default_system_applies_when_a_sample_has_none(tiny_tokenizer: Any) -> None:
    options = TokenizeOptions(default_system="Be brief.")
    text = "".join(t for t, _ in render_preview(SAMPLES[0], tiny_tokenizer, options))
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_only_sft_can_be_packed(tiny_tokenizer: Any) -> None:
    example = KTOExample((Message("user", "a"), Message("assistant", "b")), label=True,
                         loc=Location("kto.json", 1))
    with pytest.raises(UnsupportedError):
        tokenize_examples([example], tiny_tokenizer, TokenizeOptions(packing=True))


def test_no_records_and_embedding_records_are_refused(tiny_tokenizer: Any) -> None:
    with pytest.raises(DataError):
        tokenize_examples([], tiny_tokenizer, TokenizeOptions())
    embedding = EmbeddingExample("q", ("p",), (), Location("e.jsonl", 1))
    with pytest.raises(UnsupportedError):
        tokenize_examples([embedding], tiny_tokenizer, TokenizeOptions())
