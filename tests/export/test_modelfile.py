"""The Modelfile's TEMPLATE, run the way Ollama runs it, renders what training rendered.

`ollama_prompt` below re-implements, independently of tuneforge, the part of Ollama that
matters (server/template.go at v0.5+, the System/Prompt/Response "legacy" path): the
Modelfile's SYSTEM is used when a chat has none, the template is executed once per
user/assistant pair with .System set only in the first, and the last execution stops at
{{ .Response }} (Ollama deletes every node after it). `execute` is Go's text/template for
the subset such templates use: text, {{ .Var }}, {{ if .Var }}...{{ end }}, {{ "string" }}.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tuneforge.data.conversation import Conversation
from tuneforge.data.records import Message
from tuneforge.data.templates import Renderer, select_template, template_names
from tuneforge.errors import UnsupportedError
from tuneforge.export.chat_format import TurnFormat, derive_format, set_jinja
from tuneforge.export.modelfile import go_template, modelfile_text

SMOLLM2_TEMPLATE = (  # SmolLM2-135M-Instruct's chat template, as its tokenizer ships it
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CONVERSATIONS = [
    (None, ["Hi!", "Hello."]),
    ("Be brief.", ["What is {{ x }}?", "A variable.\nIn Go, {{ .Prompt }} too."]),
    (None, ["one", "1", "two\nlines", "2", "中文？", "好。"]),
    ("Line one.\nLine two.", ["a", "b", "c", "d"]),
]
ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def execute(template: str, values: dict[str, str], *, cut: bool = False) -> str:
    """Go text/template on Ollama's simple form; `cut` stops after {{ .Response }}."""
    out: list[str] = []
    emitting = [True]
    pos = 0
    for match in ACTION.finditer(template):
        if all(emitting):
            out.append(template[pos:match.start()])
        pos = match.end()
        action = match[1]
        assert not action.startswith("-") and not action.endswith("-"), action
        action = action.strip()
        if action.startswith("if ."):
            emitting.append(bool(values[action[4:]]))
        elif action == "end":
            emitting.pop()
        elif action.startswith('"'):
            out.append(json.loads(action) if all(emitting) else "")
        elif action.startswith("."):
            out.append(values[action[1:]] if all(emitting) else "")
            if cut and action == ".Response":
                return "".join(out)
        else:
            raise AssertionError(f"unexpected action {action!r}")
    assert emitting == [True]
    return "".join(out) + template[pos:]


def parse_modelfile(text: str) -> dict[str, Any]:
    """FROM, TEMPLATE, SYSTEM and the stop parameters of a Modelfile."""
    parsed: dict[str, Any] = {"stop": [], "system": ""}
    for match in re.finditer(r'^(FROM|TEMPLATE|SYSTEM|PARAMETER stop) ("""(.*?)"""|"(.*?)"|\S+)$',
                             text, re.MULTILINE | re.DOTALL):
        value = match[3] if match[3] is not None else match[4] if match[4] is not None else match[2]
        key = match[1].split()[-1].lower()
        if key == "stop":
            parsed["stop"].append(value)
        else:
            parsed[key] = value
    return parsed


def ollama_prompt(modelfile: dict[str, Any], system: str | None, turns: list[str]) -> str:
    """The prompt Ollama sends for a chat: user/assistant contents alternating, user last."""
    messages = [("system", system)] if system else []
    if not messages and modelfile["system"]:
        messages = [("system", modelfile["system"])]
    messages += [("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]
    values = {"System": "", "Prompt": "", "Response": ""}
    out = []
    for role, content in messages:
        if role == "system":
            if values["Prompt"] or values["Response"]:
                out.append(execute(modelfile["template"], values))
                values = {"System": "", "Prompt": "", "Response": ""}
            values["System"] = content
        elif role == "user":
            if values["Response"]:
                out.append(execute(modelfile["template"], values))
                values = {"System": "", "Prompt": "", "Response": ""}
            values["Prompt"] = content
        else:
            values["Response"] = content
    out.append(execute(modelfile["template"], values, cut=True))
    return "".join(out)


def training_text(renderer: Renderer, system: str | None, turns: list[str]) -> str:
    messages = tuple(Message("user" if i % 2 == 0 else "assistant", t)
                     for i, t in enumerate(turns))
    return renderer.render_reference(Conversation(messages, system=system)).text


def assert_ollama_renders_as_training(renderer: Renderer, fmt: TurnFormat, modelfile: str,
                                      bos: str | None) -> None:
    """Every prompt Ollama builds is the training text before the reply, and the training
    text after the reply starts with one of the stop strings (or is empty)."""
    parsed = parse_modelfile(modelfile)
    assert parsed["stop"] == list(fmt.stops)
    for system, turns in CONVERSATIONS:
        expected = training_text(renderer, system, turns)
        prompt = ollama_prompt(parsed, system, turns[:-1])
        if fmt.prefix:  # BOS: added by the runtime (add_bos_token), not by the TEMPLATE
            assert fmt.prefix == bos
            prompt = bos + prompt
        assert expected.startswith(prompt + turns[-1]), (prompt, expected)
        after = expected[len(prompt + turns[-1]):]
        assert after == "" or any(after.startswith(s) for s in parsed["stop"]), after


@pytest.fixture
def tokenizer(tiny_tokenizer_dir: Path) -> Any:
    """The tiny tokenizer with a BOS token, so templates that write one have it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    tokenizer.bos_token = "<|endoftext|>"
    return tokenizer


def test_chatml_modelfile_has_the_template_system_and_stop(tokenizer) -> None:
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    fmt = derive_format(select_template(tokenizer, None), tokenizer)
    text = modelfile_text(fmt, "./model.gguf", template_name="tokenizer")
    assert text.splitlines()[2:] == [
        "FROM ./model.gguf",
        'TEMPLATE """{{ if .System }}<|im_start|>system',
        "{{ .System }}<|im_end|>",
        "{{ end }}<|im_start|>user",
        "{{ .Prompt }}<|im_end|>",
        "<|im_start|>assistant",
        "{{ .Response }}<|im_end|>",
        '"""',
        'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""',
        'PARAMETER stop "<|im_end|>"',
    ]


@pytest.mark.parametrize("template", ["tiny", "smollm2"])
def test_ollama_renders_the_tokenizer_template_as_training(tokenizer, template) -> None:
    if template == "smollm2":
        tokenizer.chat_template = SMOLLM2_TEMPLATE
    renderer = select_template(tokenizer, None)
    fmt = derive_format(renderer, tokenizer)
    assert_ollama_renders_as_training(
        renderer, fmt, modelfile_text(fmt, ".", template_name="tokenizer"), tokenizer.bos_token)


@pytest.mark.parametrize("name", template_names())
def test_ollama_renders_every_named_template_as_training(tokenizer, name) -> None:
    renderer = select_template(tokenizer, name)
    fmt = derive_format(renderer, tokenizer)
    assert_ollama_renders_as_training(
        renderer, fmt, modelfile_text(fmt, ".", template_name=name), tokenizer.bos_token)


@pytest.mark.parametrize("name", ["chatml", "llama2", "alpaca"])
def test_generated_jinja_renders_the_named_template(tokenizer, name) -> None:
    renderer = select_template(tokenizer, name)
    fmt = derive_format(renderer, tokenizer)
    set_jinja(tokenizer, fmt, renderer)
    for system, turns in CONVERSATIONS:
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
                     for i, t in enumerate(turns)]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        assert text == training_text(renderer, system, turns)


def test_training_default_system_becomes_the_modelfile_system(tokenizer) -> None:
    renderer = select_template(tokenizer, "chatml")
    fmt = derive_format(renderer, tokenizer, default_system="Answer in French.")
    assert parse_modelfile(modelfile_text(fmt, ".", template_name="chatml"))["system"] == (
        "Answer in French.")


def test_braces_in_template_text_stay_literal_in_go() -> None:
    fmt = TurnFormat(prefix="", before_system="{", system_open="", system_close="",
                     after_system="{{user}}: {", mid="\n{{{", end="}}\n", default_system="",
                     stops=())
    template = go_template(fmt)
    assert execute(template, {"System": "", "Prompt": "p", "Response": "r"}) == (
        fmt.render(None, [("p", "r")]))


def test_a_template_that_is_not_per_turn_is_unsupported(tokenizer) -> None:
    tokenizer.chat_template = (
        "{% for m in messages %}{{ loop.index }}. {{ m['content'] }}\n{% endfor %}")
    with pytest.raises(UnsupportedError, match="per-turn TEMPLATE cannot reproduce it"):
        derive_format(select_template(tokenizer, None), tokenizer)


def test_triple_quotes_cannot_be_written_to_a_modelfile(tokenizer) -> None:
    fmt = derive_format(select_template(tokenizer, "chatml"), tokenizer,
                        default_system='Say """hi"""')
    with pytest.raises(UnsupportedError, match='contains """'):
        modelfile_text(fmt, ".", template_name="chatml")
