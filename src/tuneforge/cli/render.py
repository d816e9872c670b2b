"""Terminal output of the CLI: rich tables and text. The only module that prints."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

_out = Console(soft_wrap=True)
_err = Console(stderr=True, soft_wrap=True)


def print_error(message: str) -> None:
    """One line on stderr: `error: <message>`; newlines folded so it stays one line."""
    print(f"error: {message}".replace("\n", " "), file=sys.stderr)


def print_text(text: str) -> None:
    """Plain text to stdout, with no markup interpretation."""
    _out.print(Text(text))


def print_summary(summary: Mapping[str, Any], show_all: bool) -> None:
    """The report of `tuneforge data validate`."""
    table = Table(title=f"dataset {summary['name']}", show_header=False)
    for key in ("kind", "files", "rows", "kept", "dropped", "train", "eval"):
        if key in summary:
            value = summary[key]
            if isinstance(value, list):
                value = ", ".join(map(str, value))
            table.add_row(key, str(value))
    for reason, count in summary.get("reasons", {}).items():
        table.add_row(f"dropped: {reason}", str(count))
    tokens = summary.get("tokens")
    if tokens:
        table.add_row("tokenizer", str(tokens["tokenizer"]))
        table.add_row("template", str(tokens["template"]))
        table.add_row(
            "tokens per sample",
            "min {min}  p50 {p50}  p90 {p90}  p99 {p99}  max {max}  mean {mean:.1f}".format(
                **tokens["lengths"]
            ),
        )
        table.add_row(f"truncated by cutoff_len={tokens['cutoff_len']}", str(tokens["truncated"]))
        table.add_row("dropped by cutoff_len", str(tokens["dropped"]))
    _out.print(table)
    issues: Sequence[str] = [*summary.get("issues", []), *(tokens or {}).get("dropped_samples", [])]
    shown = issues if show_all else issues[:5]
    for issue in shown:
        print_text(f"  {issue}")
    if len(issues) > len(shown):
        print_text(f"  ... {len(issues) - len(shown)} more (use --all)")


def print_preview(samples: Sequence[Sequence[tuple[str, bool]]], header: str) -> None:
    """Rendered training text; learned spans highlighted (and bracketed when not a tty)."""
    _out.print(Text(header, style="bold"))
    plain = not _out.is_terminal
    for i, pieces in enumerate(samples):
        _out.rule(f"sample {i}")
        text = Text()
        for piece, learned in pieces:
            if learned and plain:
                text.append("[[" + piece + "]]")
            else:
                text.append(piece, style="black on green" if learned else "")
        _out.print(text)
    if plain:
        print_text("(text between [[ and ]] is learned)")


def print_yaml(text: str) -> None:
    """A YAML document, verbatim."""
    print(text, end="")


@contextmanager
def training_progress() -> Iterator[Callable[[dict[str, Any]], None]]:
    """A progress bar fed by trainer_log records: step, loss and tokens/s."""
    bar = Progress(
        TextColumn("[bold]training"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
        TimeRemainingColumn(), console=_err, transient=False,
    )
    task = bar.add_task("train", total=None, loss="-", speed="")
    # tuneforge's warnings (a signal's stop notice, a data problem) above the bar, not only in
    # train.log; rich's handler prints through the console the bar redraws on
    notices = RichHandler(level=logging.WARNING, console=_err, show_time=False,
                          show_path=False, markup=False)
    notices.setFormatter(logging.Formatter("%(message)s"))
    package_logger = logging.getLogger("tuneforge")

    def update(record: dict[str, Any]) -> None:
        if not bar.live.is_started:  # no bar at all when a run fails before its first step
            bar.start()
        loss = record.get("loss") if record.get("loss") is not None else record.get("eval_loss")
        bar.update(task, completed=record["current_steps"], total=record["total_steps"],
                   loss=f"{loss:.4f}" if loss is not None else "-",
                   # encoder stages count no tokens: no speed rather than "0 tok/s"
                   speed=f"{record['tokens_per_s']:.0f} tok/s" if record.get("tokens") else "")

    package_logger.addHandler(notices)
    try:
        yield update
    finally:
        package_logger.removeHandler(notices)
        if bar.live.is_started:
            bar.stop()


def print_train_outcome(outcome: Any) -> None:
    """Where a finished training run put its output, metrics and plots (whole paths)."""
    paths, result = outcome.paths, outcome.result
    lines = [f"run {paths.root}: {result.status} after {result.global_step} steps"]
    if result.output_dir is not None:
        lines.append(f"  output:     {result.output_dir}")
    if result.checkpoint is not None:
        lines.append(f"  checkpoint: {result.checkpoint}")
    lines.append(f"  metrics:    {paths.trainer_log}")
    lines += [f"  plot:       {plot}" for plot in outcome.plots]
    lines += [f"  {key}: {result.metrics[key]:.4f}" for key in ("train_loss", "eval_loss")
              if key in result.metrics]
    if result.status == "stopped":
        lines.append("  resume with the same command (it continues from the checkpoint)")
    print_text("\n".join(lines))


def print_prepared(name: str, path: Any) -> None:
    """Where `tuneforge models prepare` put (or found) a model."""
    print_text(f"{name}: ready in {path}")


def print_models(infos: Sequence[Any]) -> None:
    """The table of `tuneforge models list`; plain tab-separated lines when piped."""
    rows = [(info.name, info.kind, "yes" if info.prepared else "no",
             str(info.path) if info.path is not None else "-", info.source) for info in infos]
    columns = ("name", "kind", "ready", "path", "source")
    if not _out.is_terminal:
        print_text("\n".join("\t".join(row) for row in [columns, *rows]))
        return
    table = Table(title="models")
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column == "name")
    for row in rows:
        table.add_row(*row)
    _out.print(table)


def print_export(result: Any) -> None:
    """Where `tuneforge export` put the model, the Modelfile and the GGUF, and how to run it."""
    record = result.record
    lines = [f"exported {result.output_dir} (template: {record.template})",
             f"  Modelfile: {result.modelfile}"]
    if result.gguf is not None:
        lines.append(f"  gguf:      {result.gguf} ({record.outtype})")
    lines.append(f"  run it:    ollama create {result.output_dir.name} -f {result.modelfile}")
    print_text("\n".join(lines))


def print_stage(text: str) -> None:
    """One line on stderr saying what a long command is doing now."""
    _err.print(Text(f"- {text}", style="dim"))


def print_demo(result: Any) -> None:
    """The demo's held-out answers before and after training, the share, and the paths."""
    table = Table(title="held-out questions: before -> after training", show_lines=True)
    for column in ("question", "before", "after"):
        table.add_column(column, overflow="fold")
    for answer in result.answers:
        table.add_row(answer.question, _marked(answer.before, answer.before_ok),
                      _marked(answer.after, answer.after_ok))
    _out.print(table)
    total = len(result.answers)
    print_text(f"answers with the new identity: before {result.share_before:.0%} "
               f"({round(result.share_before * total)}/{total}), after {result.share_after:.0%} "
               f"({round(result.share_after * total)}/{total})")
    if result.loss_plot is not None:
        print_text(f"loss plot: {result.loss_plot}")
    print_train_outcome(result.outcome)


def print_eval(result: Mapping[str, Any]) -> None:
    """The metrics of `tuneforge eval`, a row per model (and the difference), and the report."""
    names: list[str] = []
    for row in result["rows"]:
        names += [n for n in row["metrics"] if n not in names]
    table = Table(title=f"{', '.join(result['dataset'])}: {result['kind']}, "
                        f"{result['samples']} samples")
    table.add_column("model")
    for name in names:
        table.add_column(name, justify="right")
    for row in result["rows"]:
        table.add_row(row["name"], *(f"{row['metrics'][n]:.4f}" if n in row["metrics"] else "-"
                                     for n in names))
    if result.get("difference"):
        table.add_row("difference", *(f"{result['difference'][n]:+.4f}"
                                      if n in result["difference"] else "-" for n in names))
    _out.print(table)
    for path in result.get("files", []):
        print_text(f"report: {path}")


def _marked(text: str, ok: bool) -> Text:
    return Text(("[ok] " if ok else "") + text, style="green" if ok else "")


def print_serving(url: str, models: Any) -> None:
    """The first line of `tuneforge serve` (tests and scripts read the URL from it), then
    what is served."""
    print(f"tuneforge serving on {url}", flush=True)
    for row in models.listing():
        parent = f" (on {row['parent']})" if row["parent"] else ""
        print(f"  {row['id']}: {row['kind']}{parent}", flush=True)
    print(f"  OpenAI base_url: {url}/v1   docs: {url}/docs   Ctrl-C stops", flush=True)


def chat_loop(session: Any, read: Callable[[str], str] = input) -> None:
    """Read a line, stream the answer, until `exit` or end of input."""
    print("chat: `clear` forgets the conversation, `exit` quits, Ctrl-C stops an answer",
          flush=True)
    while True:
        try:
            text = read("\nuser: ").strip()
        except (EOFError, KeyboardInterrupt):
            print(flush=True)
            return
        if text in ("exit", "quit"):
            return
        if text == "clear":
            session.clear()
            print("(conversation cleared)", flush=True)
            continue
        if not text:
            continue
        print("assistant: ", end="", flush=True)
        answer = session.send(text)
        try:
            for delta in answer:
                print(delta, end="", flush=True)
        except KeyboardInterrupt:
            answer.close()
            print(" [stopped]", end="")
        print(flush=True)
