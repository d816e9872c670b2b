"""An Ollama Modelfile whose TEMPLATE, SYSTEM and stop tokens are the ones used in training.

The TEMPLATE uses Ollama's System/Prompt/Response form: Ollama executes it once per
user/assistant pair of the history (System set only in the first) and, for the turn to be
generated, only up to `{{ .Response }}`. With the pieces of `TurnFormat` that reproduces
the training template exactly (see chat_format.py).
Reference: https://github.com/ollama/ollama/blob/main/docs/modelfile.md
"""

from __future__ import annotations

import re

from tuneforge.errors import UnsupportedError
from tuneforge.export.chat_format import TurnFormat

MODELFILE = "Modelfile"
_BRACES = re.compile(r"\{\{+|\{$")  # what Go's text/template would read as an action


def go_template(fmt: TurnFormat) -> str:
    """The TEMPLATE text: one user/assistant turn in Go template syntax."""
    return "".join([
        _literal(fmt.before_system),
        "{{ if .System }}", _literal(fmt.system_open), "{{ .System }}",
        _literal(fmt.system_close), "{{ end }}",
        _literal(fmt.after_system), "{{ .Prompt }}", _literal(fmt.mid),
        "{{ .Response }}", _literal(fmt.end),
    ])


def modelfile_text(fmt: TurnFormat, source: str, *, template_name: str) -> str:
    """The Modelfile: FROM `source`, TEMPLATE, SYSTEM (if any) and PARAMETER stop lines.

    Raises:
        UnsupportedError: a text holds `\"\"\"`, which a Modelfile cannot quote.
    """
    template = "the tokenizer's own" if template_name == "tokenizer" else repr(template_name)
    lines = [
        "# Written by tuneforge export. TEMPLATE, SYSTEM and the stop tokens reproduce the chat",
        f"# template used in training: {template}.",
    ]
    if fmt.prefix:
        lines.append(f"# The runtime adds {fmt.prefix} before the first turn (add_bos_token).")
    lines += [
        f"FROM {source}",
        f"TEMPLATE {_triple_quoted(go_template(fmt), 'TEMPLATE')}",
    ]
    if fmt.default_system:
        lines.append(f"SYSTEM {_triple_quoted(fmt.default_system, 'SYSTEM')}")
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in fmt.stops]
    return "\n".join(lines) + "\n"


def _literal(text: str) -> str:
    """`text` as Go template text: runs of `{` that would open an action become strings."""
    return _BRACES.sub(lambda m: '{{ "' + m[0] + '" }}', text)


def _triple_quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise UnsupportedError(f"Modelfile {what}", 'the text contains """, which cannot be quoted')
    return f'"""{text}"""'


def _quoted(text: str) -> str:
    """Ollama's own quoting: plain double quotes unless the text holds one."""
    return _triple_quoted(text, "PARAMETER stop") if '"' in text or "\n" in text \
        else f'"{text}"'
