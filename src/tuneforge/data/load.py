"""Load the datasets a DataConfig names: read, convert, report drops, sample, mix, split.

The one entry point of the data path before tokenisation; CLI, SDK and REST call it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.config.data import DataConfig
from tuneforge.data import mix
from tuneforge.data.dataset_info import DatasetSpec, resolve_dataset
from tuneforge.data.formats import convert
from tuneforge.data.infer import infer_spec
from tuneforge.data.read import read_rows
from tuneforge.data.records import Example, Kind, Location
from tuneforge.data.rows import FormatSpec, RowProblem
from tuneforge.errors import DataError, Issue

MAX_KEPT_ISSUES = 1000
STAGE_KINDS: dict[str, Kind] = {
    "pt": "pt",
    "sft": "sft",
    "rm": "pairwise",
    "dpo": "pairwise",
    "orpo": "pairwise",
    "kto": "kto",
    "embedding": "embedding",
    "rerank": "rerank",
}


@dataclass
class DropReport:
    """Which rows were dropped and why: counts per reason, and the first issues."""

    rows: int = 0
    kept: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    issues: list[Issue] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return sum(self.reasons.values())

    def add(self, reason: str, issue: Issue) -> None:
        self.reasons[reason] += 1
        if len(self.issues) < MAX_KEPT_ISSUES:
            self.issues.append(issue)

    def merge(self, other: DropReport) -> None:
        self.rows += other.rows
        self.kept += other.kept
        self.reasons.update(other.reasons)
        self.issues.extend(other.issues[: max(0, MAX_KEPT_ISSUES - len(self.issues))])

    def to_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "kept": self.kept,
            "dropped": self.dropped,
            "reasons": dict(self.reasons),
            "issues": [str(i) for i in self.issues],
        }


@dataclass
class LoadedDataset:
    """The records of one named dataset, all of one kind, and what was dropped."""

    name: str
    kind: Kind
    examples: list[Example]
    report: DropReport
    files: tuple[Path, ...] = ()


def _spec_for(
    spec: DatasetSpec, first_row: object, loc: Location, formatting: str, want: Kind | None
) -> FormatSpec:
    """How to read the rows: the dataset_info entry's spec, else inferred from the first row."""
    if spec.format is not None:
        fmt = spec.format
        if want == "pt" and fmt.kind == "sft" and fmt.formatting == "alpaca":
            return FormatSpec("alpaca", "pt", fmt.columns, fmt.tags)
        if want == "rerank" and fmt.kind != "rerank":
            return FormatSpec("rerank", "rerank", fmt.columns, fmt.tags)
        return fmt
    if formatting == "auto" and want == "rerank":
        formatting = "rerank"
    if not isinstance(first_row, dict):
        raise DataError.one(
            f"expected JSON objects as records, got {type(first_row).__name__}",
            file=loc.file, line=loc.line, field=loc.field("") or None,
        )
    kind = want if want in ("pt", "rerank", "embedding") else None
    return infer_spec(first_row, formatting, kind)


def _has_label(row: object, labels: Sequence[str]) -> bool:
    value = row.get("labels") if isinstance(row, dict) else None
    values = [value] if isinstance(value, str) else (value or [])
    return any(label in values for label in labels)


def read_dataset(
    spec: DatasetSpec,
    *,
    formatting: str = "auto",
    want: Kind | None = None,
    strict: bool = False,
    seed: int = 42,
    labels: Sequence[str] = (),
) -> LoadedDataset:
    """Every record of `spec`'s files; bad rows are dropped and reported, or raised if strict.

    `labels` keeps only rows whose `labels` column (a string or a list) holds one of them,
    as Qianfan's corpus_labels select a corpus's categories.
    """
    report = DropReport()
    examples: list[Example] = []
    fmt: FormatSpec | None = None
    for path in spec.files:
        for row, loc in read_rows(path, spec.file_type):
            if fmt is None:
                fmt = _spec_for(spec, row, loc, formatting, want)
            if labels and not _has_label(row, labels):
                continue
            report.rows += 1
            try:
                records = convert(row, loc, fmt)
            except RowProblem as problem:
                report.add(
                    problem.reason,
                    Issue(
                        problem.message,
                        file=loc.file,
                        line=loc.line,
                        field=loc.field(problem.field) or None,
                    ),
                )
                continue
            examples.extend(records)
            report.kept += 1
    if fmt is None or not report.rows:
        raise DataError.one(
            f"no rows of {spec.name!r} carry the labels {list(labels)} in their `labels` column",
            file=str(spec.files[0]),
            field="corpus_labels",
        )
    if want is not None and fmt.kind != want:
        raise DataError.one(
            f"dataset {spec.name!r} holds {fmt.kind} records; this stage needs {want} records",
            file=str(spec.files[0]),
        )
    if report.issues and (strict or not examples):
        lead = "no valid samples left" if not examples else "rows are invalid (strict mode)"
        raise DataError(
            report.issues,
            hint=f"{spec.name}: {lead}; "
            f"{report.dropped} of {report.rows} rows dropped, "
            + ", ".join(f"{r}: {n}" for r, n in report.reasons.most_common()),
        )
    if spec.num_samples is not None:
        examples = mix.resample(examples, spec.num_samples, seed)
    return LoadedDataset(spec.name, fmt.kind, examples, report, spec.files)


@dataclass
class DataBundle:
    """What training consumes: train and eval records of one kind, and the drop reports."""

    kind: Kind
    train: list[Example]
    eval: list[Example]
    datasets: list[LoadedDataset]

    def report(self) -> dict[str, object]:
        return {d.name: d.report.to_dict() for d in self.datasets}


def _load_all(
    names: Sequence[str], cfg: DataConfig, want: Kind | None, seed: int, labels: Sequence[str] = ()
) -> list[LoadedDataset]:
    loaded = []
    for name in names:
        spec = resolve_dataset(name, Path(cfg.dataset_dir), cfg.file_type)
        dataset = read_dataset(
            spec, formatting=cfg.formatting, want=want, strict=cfg.strict, seed=seed, labels=labels
        )
        if cfg.max_samples is not None:
            dataset.examples = dataset.examples[: cfg.max_samples]
        loaded.append(dataset)
    kinds = {d.kind for d in loaded}
    if len(kinds) > 1:
        raise DataError.one(
            "datasets of different kinds cannot be mixed: "
            + ", ".join(f"{d.name} is {d.kind}" for d in loaded),
        )
    return loaded


def load_data(cfg: DataConfig, *, stage: str | None = None, seed: int = 42) -> DataBundle:
    """Load, mix, sample and split the datasets `cfg` names, for `stage` if given."""
    if not cfg.dataset:
        raise DataError.one(
            "no dataset given; expected at least one name or path", field="data.dataset"
        )
    want = STAGE_KINDS.get(stage) if stage else None
    loaded = _load_all(cfg.dataset, cfg, want, seed)
    kind = loaded[0].kind
    train = mix.interleave(
        [d.examples for d in loaded], cfg.interleave_probs, cfg.mix_strategy, seed
    )
    train = mix.sample(train, cfg.sampling_rate, seed)
    train, held = mix.split_eval(train, cfg.eval_split_ratio, seed)
    if cfg.eval_dataset:
        evals = _load_all(cfg.eval_dataset, cfg, kind, seed)
        held = [x for d in evals for x in d.examples]
        loaded += evals
    if cfg.corpus is not None:
        extra: list[Example] = []
        for i, item in enumerate(cfg.corpus.corpus_configs):
            corpus = _load_all([item.corpus_type], cfg, kind, seed + i + 1, item.corpus_labels)[0]
            extra += mix.mix_corpus(train, corpus.examples, item, cfg.corpus.data_copy, seed + i)
            loaded.append(corpus)
        train = mix.interleave([train, extra], None, "concat", seed)
    return DataBundle(kind, train, held, loaded)
