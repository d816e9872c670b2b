"""Chat templates: named ones as LLaMA-Factory renders them, the tokenizer's own jinja, tools.

The golden files in tests/assets/templates/ were produced by LLaMA-Factory 0.9.5 itself:
`TEMPLATES[name].encode_multiturn` with a stub tokenizer whose bos is <s> and eos is </s>,
its pieces joined, for the conversation in `GOLDEN_CONVERSATION`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tuneforge.data.chat_template import TokenizerTemplate
from tuneforge.data.conversation import Conversation
from tuneforge.data.records import Message, ToolCall
from tuneforge.data.templates import (
    NamedTemplate,
    load_template_spec,
    select_template,
    template_names,
)
from tuneforge.errors import NotFoundError

GOLDEN = Path(__file__).resolve().parent.parent / "assets" / "templates"
GOLDEN_CONVERSATION = Conversation(
    (
        Message("user", "Hello!"),
        Message("assistant", "Hi there."),
        Message("user", "你好，今天怎么样？"),
        Message("assistant", "很好，谢谢。"),
    ),
    system="You are a helpful assistant.",
)
TOOL_CONVERSATION = Conversation(
    (
        Message("user", "Weather in Paris?"),
        Message("assistant", "", tool_calls=(ToolCall("get_weather", '{"city": "Paris"}'),)),
        Message("tool", "sunny"),
        Message("assistant", "It is sunny."),
    ),
    tools='[{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}]',
)
CALL_JSON = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def named(name: str) -> NamedTemplate:
    spec, sha1 = load_template_spec(name)
    return NamedTemplate(spec, bos_token="<s>", eos_token="</s>", sha1=sha1)


def with_template(directory: Path, template: str | None) -> Any:
    """A fresh copy of a saved tokenizer with another chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize("name", ["default", "empty", "alpaca", "chatml", "qwen", "llama2",
                                  "llama3", "vicuna"])
def test_named_template_renders_as_llamafactory(name: str) -> None:
    expected = (GOLDEN / f"{name}.txt").read_text(encoding="utf-8")
    assert named(name).render_reference(GOLDEN_CONVERSATION).text == expected


def test_every_shipped_template_has_a_golden_file() -> None:
    assert template_names() == sorted(p.stem for p in GOLDEN.glob("*.txt"))


def test_assistant_span_is_the_turn_as_the_template_emits_it() -> None:
    rendered = named("chatml").render_reference(GOLDEN_CONVERSATION)
    spans = [rendered.text[s.start : s.end] for s in rendered.spans]
    assert spans == ["Hi there.<|im_end|>\n", "很好，谢谢。<|im_end|>\n"]


def test_unknown_template_raises_not_found_listing_the_valid_ones(tiny_tokenizer: Any) -> None:
    with pytest.raises(NotFoundError) as info:
        select_template(tiny_tokenizer, "chatgpt")
    assert info.value.name == "chatgpt"
    assert all(name in (info.value.hint or "") for name in template_names())


def test_explicit_template_wins_over_the_tokenizers_own(tiny_tokenizer: Any) -> None:
    assert select_template(tiny_tokenizer, "vicuna").describe()["template"] == "vicuna"
    own = select_template(tiny_tokenizer, None).describe()
    sha1 = hashlib.sha1(tiny_tokenizer.chat_template.encode()).hexdigest()
    assert own == {"template": "tokenizer", "sha1": sha1}
    json.dumps(own)  # small and serialisable, stored with every artifact


def test_tokenizer_without_a_chat_template_gets_empty(tiny_tokenizer_dir: Path) -> None:
    tokenizer = with_template(tiny_tokenizer_dir, None)
    assert select_template(tokenizer, None).describe()["template"] == "empty"


def test_tokenizer_template_renders_like_apply_chat_template(tiny_tokenizer: Any) -> None:
    template = select_template(tiny_tokenizer, None)
    rendered = template.render_all([GOLDEN_CONVERSATION])[0]
    messages = [{"role": "system", "content": GOLDEN_CONVERSATION.system}] + [
        m.to_dict() for m in GOLDEN_CONVERSATION.messages
    ]
    assert rendered.text == tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert [rendered.text[s.start : s.end] for s in rendered.spans] == [
        "Hi there.<|im_end|>\n", "很好，谢谢。<|im_end|>\n"
    ]


def test_named_template_renders_tool_call_as_json_and_result_as_observation() -> None:
    rendered = named("chatml").render_reference(TOOL_CONVERSATION)
    assert rendered.text.startswith("<|im_start|>system\nYou have access to the following tools:")
    first_turn = rendered.text[rendered.spans[0].start : rendered.spans[0].end]
    assert first_turn == CALL_JSON + "<|im_end|>\n"
    assert "<|im_start|>tool\nsunny<|im_end|>\n<|im_start|>assistant\n" in rendered.text
    qwen = named("qwen").render_reference(TOOL_CONVERSATION).text
    assert f"<tool_call>\n{CALL_JSON}\n</tool_call><|im_end|>" in qwen
    assert "<tool_response>\nsunny\n</tool_response>" in qwen


def test_tokenizer_template_without_tool_calls_gets_them_as_json(tiny_tokenizer: Any) -> None:
    template = select_template(tiny_tokenizer, None)
    assert isinstance(template, TokenizerTemplate)
    assert not template.renders_tool_calls and template.renders_tool_role
    rendered = template.render_all([TOOL_CONVERSATION])[0]
    assert rendered.text[rendered.spans[0].start : rendered.spans[0].end] == (
        CALL_JSON + "<|im_end|>\n"
    )
    assert "<tool_response>\nsunny\n</tool_response>" in rendered.text  # its own tool turn
    assert '"name": "get_weather"' in rendered.text.split("<|im_end|>")[0]  # schema in system
    assert template.render_pieces(TOOL_CONVERSATION) == template.render_reference(TOOL_CONVERSATION)


def test_tool_result_becomes_a_user_turn_when_the_template_drops_tool_turns(
    tiny_tokenizer_dir: Path,
) -> None:
    users_only = (
        "{% for m in messages %}{% if m['role'] in ['system', 'user', 'assistant'] %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    template = select_template(with_template(tiny_tokenizer_dir, users_only), None)
    assert isinstance(template, TokenizerTemplate) and not template.renders_tool_role
    text = template.render_all([TOOL_CONVERSATION])[0].text
    assert "<|im_start|>user\nsunny<|im_end|>\n" in text


def test_template_that_rewrites_earlier_turns_renders_per_sample(
    tiny_tokenizer_dir: Path,
) -> None:
    # Like Qwen3: reasoning is stripped from every assistant turn but the last.
    rewriting = (
        "{% for m in messages %}{% set c = m['content'] %}"
        "{% if m['role'] == 'assistant' and not loop.last %}"
        "{% set c = c.split('</think>')[-1].lstrip('\\n') %}{% endif %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + c + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    template = select_template(with_template(tiny_tokenizer_dir, rewriting), None)
    assert isinstance(template, TokenizerTemplate) and not template.is_concatenative
    conversation = Conversation((
        Message("user", "q1"), Message("assistant", "<think>\nx\n</think>\n\na1"),
        Message("user", "q2"), Message("assistant", "a2"),
    ))
    rendered = template.render_all([conversation])[0]
    assert "<think>" not in rendered.text
    assert [rendered.text[s.start : s.end] for s in rendered.spans] == [
        "a1<|im_end|>\n", "a2<|im_end|>\n"
    ]


@pytest.mark.parametrize("fixture", ["tiny_tokenizer", "smollm2_tokenizer"])
def test_derived_pieces_equal_jinja_on_varied_conversations(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    template = select_template(request.getfixturevalue(fixture), None)
    assert isinstance(template, TokenizerTemplate) and template.is_concatenative
    contents = ["a", " b ", "\n中文\n", "{{ c }}", "", "d'\"e", "<|im_start|>f"]
    conversations = [
        Conversation(
            tuple(Message("user" if j % 2 == 0 else "assistant", contents[(i + j) % len(contents)])
                  for j in range(2 * turns)),
            system=system,
        )
        for i, (turns, system) in enumerate(
            [(1, None), (2, "S"), (3, None), (1, "中文系统"), (2, ""), (4, "x\ny")]
        )
    ]
    for conversation in [*conversations, TOOL_CONVERSATION]:
        assert template.render_pieces(conversation) == template.render_reference(conversation)


def test_pieces_that_disagree_with_jinja_on_real_samples_are_not_used(
    tiny_tokenizer_dir: Path,
) -> None:
    # Concatenative on every probe, but it rewrites one word that only the data contains.
    sly = (
        "{% for m in messages %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] | replace('zz', 'ZZ') }}"
        "{{ '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    template = select_template(with_template(tiny_tokenizer_dir, sly), None)
    assert isinstance(template, TokenizerTemplate) and template.is_concatenative
    conversations = [
        Conversation((Message("user", f"q{i}"), Message("assistant", "buzz" if i == 3 else "a")))
        for i in range(8)
    ]
    batch = template.render_all(conversations)
    assert [batch[i] for i in range(8)] == [template.render_reference(c) for c in conversations]
    assert "buZZ" in batch.texts[3]
