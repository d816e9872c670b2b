"""Rows -> canonical records: alpaca, sharegpt, OpenAI messages, preference, KTO, text,
FlagEmbedding pairs and rerank triples.

Follows LLaMA-Factory's converter rules (sharegpt roles alternate user/observation then
assistant/function; an SFT sample ends with an assistant turn, a ranking sample with a user
turn) but a bad row raises `RowProblem` naming the field and the reason instead of being
skipped silently; the loader turns those into a drop report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from tuneforge.data.openai_format import convert_openai, convert_preference
from tuneforge.data.records import (
    ChatExample,
    EmbeddingExample,
    Example,
    KTOExample,
    Location,
    Message,
    PreferenceExample,
    RerankExample,
    TextExample,
)
from tuneforge.data.rows import (
    Columns,
    FormatSpec,
    RowProblem,
    Tags,
    as_string,
    get_column,
    kto_tag,
    optional_string,
    require_response,
    tool_calls_from_text,
    tools_json,
    type_name,
)

# ---------------------------------------------------------------- alpaca


def _alpaca_prompt(row: Mapping[str, Any], cols: Columns) -> list[Message]:
    messages: list[Message] = []
    if cols.history and row.get(cols.history) not in (None, ""):
        history = row[cols.history]
        if not isinstance(history, list):
            raise RowProblem(
                "invalid history",
                cols.history,
                f"expected a list of [user, assistant] pairs, got {type_name(history)}",
            )
        for i, pair in enumerate(history):
            where = f"{cols.history}[{i}]"
            if not (
                isinstance(pair, list | tuple)
                and len(pair) == 2
                and all(isinstance(t, str) for t in pair)
            ):
                raise RowProblem(
                    "invalid history",
                    where,
                    f"expected a [user, assistant] pair of strings, got {pair!r:.80}",
                )
            messages += [Message("user", pair[0]), Message("assistant", pair[1])]
    parts = []
    if cols.prompt:
        prompt = get_column(row, cols.prompt)
        if as_string(prompt, cols.prompt):
            parts.append(prompt)
    if cols.query and row.get(cols.query) not in (None, ""):
        parts.append(as_string(row[cols.query], cols.query))
    if not parts:
        raise RowProblem(
            "empty prompt",
            cols.prompt or cols.query or "",
            "expected a non-empty instruction or input",
        )
    # the seed: `query` is joined to `prompt` with a newline, as LLaMA-Factory does
    messages.append(Message("user", "\n".join(parts)))
    return messages


def _alpaca(row: Mapping[str, Any], loc: Location, spec: FormatSpec) -> Example:
    cols = spec.columns
    if spec.kind == "pt":
        column = cols.prompt or "text"
        return TextExample(as_string(get_column(row, column), column, empty_ok=False), loc)
    prompt = _alpaca_prompt(row, cols)
    system, tools = optional_string(row, cols.system), tools_json(row, cols.tools)
    if spec.kind == "pairwise":
        chosen, rejected = _alpaca_pair(row, cols)
        return PreferenceExample(
            tuple(prompt),
            Message("assistant", chosen),
            Message("assistant", rejected),
            loc,
            system,
            tools,
        )
    response_col = cols.response or "output"
    response = as_string(get_column(row, response_col), response_col)
    if not response.strip():
        raise RowProblem("empty response", response_col, "expected a non-empty response")
    messages = (*prompt, Message("assistant", response))
    if spec.kind == "kto":
        return KTOExample(messages, kto_tag(row, cols), loc, system, tools)
    return ChatExample(messages, loc, system, tools)


def _alpaca_pair(row: Mapping[str, Any], cols: Columns) -> tuple[str, str]:
    if cols.chosen and cols.rejected:
        return (
            as_string(get_column(row, cols.chosen), cols.chosen, empty_ok=False),
            as_string(get_column(row, cols.rejected), cols.rejected, empty_ok=False),
        )
    column = cols.response or "output"
    value = get_column(row, column)
    if not isinstance(value, list) or len(value) != 2:
        got = f"{len(value)} items" if isinstance(value, list) else type_name(value)
        raise RowProblem(
            "ranking output not two items",
            column,
            f"expected [chosen, rejected], a list of two strings, got {got}",
        )
    return (
        as_string(value[0], f"{column}[0]", empty_ok=False),
        as_string(value[1], f"{column}[1]", empty_ok=False),
    )


# ---------------------------------------------------------------- sharegpt


def _sharegpt_turn(turn: Any, where: str, tags: Tags) -> tuple[str, str]:
    if not isinstance(turn, dict):
        raise RowProblem("wrong type", where, f"expected a message object, got {type_name(turn)}")
    role = get_column(turn, tags.role_tag, required=False)
    if role is None:
        raise RowProblem(
            "missing column", f"{where}.{tags.role_tag}", f"missing key {tags.role_tag!r}"
        )
    content = get_column(turn, tags.content_tag, required=False)
    if content is None:
        raise RowProblem(
            "missing column", f"{where}.{tags.content_tag}", f"missing key {tags.content_tag!r}"
        )
    return str(role), as_string(content, f"{where}.{tags.content_tag}")


def _sharegpt_message(role_tag: str, content: str, where: str, tags: Tags) -> Message:
    if role_tag == tags.user_tag:
        return Message("user", content)
    if role_tag == tags.observation_tag:
        return Message("tool", content)
    if role_tag == tags.function_tag:
        return Message("assistant", "", tool_calls=tool_calls_from_text(content, where))
    return Message("assistant", content)


def _sharegpt(row: Mapping[str, Any], loc: Location, spec: FormatSpec) -> Example:
    cols, tags = spec.columns, spec.tags
    turns = get_column(row, cols.messages)
    if not isinstance(turns, list):
        raise RowProblem(
            "wrong type", cols.messages, f"expected a list of messages, got {type_name(turns)}"
        )
    system = optional_string(row, cols.system)
    parsed = [_sharegpt_turn(t, f"{cols.messages}[{i}]", tags) for i, t in enumerate(turns)]
    offset = 0
    if parsed and tags.system_tag and parsed[0][0] == tags.system_tag:
        system, offset = parsed[0][1] or None, 1
    odd, even = (tags.user_tag, tags.observation_tag), (tags.assistant_tag, tags.function_tag)
    messages = []
    for i, (role, content) in enumerate(parsed[offset:]):
        where = f"{cols.messages}[{i + offset}]"
        allowed = odd if i % 2 == 0 else even
        if role not in allowed:
            raise RowProblem(
                "invalid role order",
                f"{where}.{tags.role_tag}",
                f"expected {' or '.join(map(repr, allowed))} at this turn, got {role!r}",
            )
        messages.append(_sharegpt_message(role, content, where, tags))
    tools = tools_json(row, cols.tools)
    if spec.kind == "pairwise":
        if len(messages) % 2 == 0:
            raise RowProblem(
                "invalid message count",
                cols.messages,
                f"expected an odd number of turns ending with a user turn, got {len(messages)}",
            )
        chosen, rejected = (
            _sharegpt_choice(row, name, tags, even)
            for name in (cols.chosen or "chosen", cols.rejected or "rejected")
        )
        return PreferenceExample(tuple(messages), chosen, rejected, loc, system, tools)
    if not messages or len(messages) % 2 != 0:
        raise RowProblem(
            "invalid message count",
            cols.messages,
            f"expected user/assistant pairs ending with an assistant turn, "
            f"got {len(messages)} turns",
        )
    require_response(messages[-1], f"{cols.messages}[{len(parsed) - 1}]")
    if spec.kind == "kto":
        return KTOExample(tuple(messages), kto_tag(row, cols), loc, system, tools)
    return ChatExample(tuple(messages), loc, system, tools)


def _sharegpt_choice(
    row: Mapping[str, Any], column: str, tags: Tags, even: tuple[str, str]
) -> Message:
    role, content = _sharegpt_turn(get_column(row, column), column, tags)
    if role not in even:
        raise RowProblem(
            "invalid role order",
            f"{column}.{tags.role_tag}",
            f"expected {' or '.join(map(repr, even))}, got {role!r}",
        )
    message = _sharegpt_message(role, content, column, tags)
    require_response(message, column)
    return message


# ---------------------------------------------------------------- text, embedding, rerank


def _text(row: Mapping[str, Any], loc: Location, spec: FormatSpec) -> Example:
    column = spec.columns.prompt if spec.columns.prompt not in (None, "instruction") else "text"
    return TextExample(as_string(get_column(row, column), column, empty_ok=False), loc)


def _string_list(value: Any, column: str, *, empty_ok: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise RowProblem(
            "wrong type", column, f"expected a list of strings, got {type_name(value)}"
        )
    if not value and not empty_ok:
        raise RowProblem("empty text", column, "expected at least one passage")
    return tuple(as_string(v, f"{column}[{i}]", empty_ok=False) for i, v in enumerate(value))


def _embedding(row: Mapping[str, Any], loc: Location, spec: FormatSpec) -> Example:
    query = as_string(get_column(row, "query"), "query", empty_ok=False)
    pos = _string_list(get_column(row, "pos"), "pos", empty_ok=False)
    neg = _string_list(row.get("neg", []), "neg", empty_ok=True)
    return EmbeddingExample(query, pos, neg, loc, optional_string(row, "prompt"))


def _rerank(row: Mapping[str, Any], loc: Location, spec: FormatSpec) -> list[Example]:
    query = as_string(get_column(row, "query"), "query", empty_ok=False)
    if "passage" in row:
        label = get_column(row, "label")
        if isinstance(label, str):  # CSV cells are text
            with contextlib.suppress(ValueError):
                label = float(label)
        if isinstance(label, bool) or not isinstance(label, int | float):
            raise RowProblem("wrong type", "label", f"expected a number, got {label!r:.40}")
        return [
            RerankExample(
                query, as_string(row["passage"], "passage", empty_ok=False), float(label), loc
            )
        ]
    pos = _string_list(get_column(row, "pos"), "pos", empty_ok=False)
    neg = _string_list(row.get("neg", []), "neg", empty_ok=True)
    return [RerankExample(query, p, 1.0, loc) for p in pos] + [
        RerankExample(query, n, 0.0, loc) for n in neg
    ]


CONVERTERS = {
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "openai": convert_openai,
    "preference": convert_preference,
    "text": _text,
    "embedding": _embedding,
}


def convert(row: Any, loc: Location, spec: FormatSpec) -> list[Example]:
    """One row as canonical records (rerank rows may expand); RowProblem when it is bad."""
    if not isinstance(row, dict):
        raise RowProblem("wrong type", "", f"expected a JSON object, got {type_name(row)}")
    if spec.formatting == "rerank":
        return _rerank(row, loc, spec)
    return [CONVERTERS[spec.formatting](row, loc, spec)]
