"""Multiple-choice accuracy on C-Eval / MMLU-style files: question, A, B, C, D, answer.

Zero-shot, scored as LLaMA-Factory's evaluator scores it: the question and its options are
rendered as one user turn with the chat template, and the model's answer is the option
letter whose token has the highest next-token logit after the generation prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.data.records import Location
from tuneforge.data.templates import Renderer
from tuneforge.errors import DataError, Issue
from tuneforge.train.generate import generation_prompt

LETTERS = "ABCDEFGH"


@dataclass(frozen=True, slots=True)
class ChoiceQuestion:
    """One question, its option texts in letter order, and the index of the right one."""

    question: str
    options: tuple[str, ...]
    answer: int
    loc: Location


def is_choice_row(row: object) -> bool:
    """Whether a record looks like a multiple-choice question (question, A, B, answer)."""
    return isinstance(row, dict) and all(k in row for k in ("question", "A", "B", "answer"))


def read_choice_file(path: Path, file_type: str = "auto") -> list[ChoiceQuestion]:
    """Every question of a JSON/JSONL/CSV file; the first row's letters set the option count.

    Raises:
        DataError: rows lack a column or name an answer that is not one of the letters;
            every problem is listed with its line.
    """
    from tuneforge.data.read import read_rows

    questions: list[ChoiceQuestion] = []
    issues: list[Issue] = []
    letters = ""
    for row, loc in read_rows(path, file_type):
        if not letters:
            letters = LETTERS[: next((i for i, c in enumerate(LETTERS)
                                      if not isinstance(row, dict) or c not in row), 8)]
        problem, column = _problem(row, letters)
        if problem:
            issues.append(Issue(problem, file=loc.file, line=loc.line, field=column))
            continue
        answer = str(row["answer"]).strip().upper()
        questions.append(ChoiceQuestion(str(row["question"]),
                                        tuple(str(row[c]) for c in letters),
                                        letters.index(answer), loc))
    if issues or not questions:
        raise DataError(issues or [Issue("expected at least one question, got none",
                                         file=str(path))])
    return questions


def _problem(row: object, letters: str) -> tuple[str | None, str | None]:
    if not isinstance(row, dict):
        return f"expected an object with question, {', '.join(letters)}, answer", None
    for column in ("question", *letters, "answer"):
        if row.get(column) is None or str(row[column]).strip() == "":
            return "expected a non-empty value", column
    if str(row["answer"]).strip().upper() not in letters:
        return f"expected one of {', '.join(letters)}, got {row['answer']!r}", "answer"
    return None, None


def choice_prompt(question: ChoiceQuestion) -> str:
    """The user turn: the question, one "X. option" line per letter, then "Answer:"."""
    lines = [question.question.strip()]
    lines += [f"{LETTERS[i]}. {text}" for i, text in enumerate(question.options)]
    return "\n".join([*lines, "Answer:"])


def predict_choices(model: Any, tokenizer: Any, renderer: Renderer,
                    questions: Sequence[ChoiceQuestion], *, system: str | None = None,
                    batch_size: int = 8) -> list[int]:
    """The index of the option letter with the highest next-token logit, per question.

    Rows are right-padded, so each prompt's last position sees exactly its own tokens.
    """
    import torch

    count = len(questions[0].options)
    # the last token of each letter, as LLaMA-Factory's evaluator encodes its choices
    letter_ids = [tokenizer.encode(c, add_special_tokens=False)[-1] for c in LETTERS[:count]]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    picks: list[int] = []
    model.eval()
    for start in range(0, len(questions), batch_size):
        batch = questions[start:start + batch_size]
        rows = [tokenizer(generation_prompt(renderer, choice_prompt(q), system),
                          add_special_tokens=False)["input_ids"] for q in batch]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
        last = torch.tensor([len(r) - 1 for r in rows])
        scores = logits[torch.arange(len(rows)), last][:, letter_ids]
        picks += scores.argmax(dim=-1).tolist()
    return picks


def choice_accuracy(picks: Sequence[int], questions: Sequence[ChoiceQuestion]) -> float:
    """The share of right picks, 0-100."""
    right = sum(p == q.answer for p, q in zip(picks, questions, strict=True))
    return 100 * right / len(questions)
