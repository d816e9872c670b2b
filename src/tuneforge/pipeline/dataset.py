"""`Dataset`: Qianfan's `qianfan.dataset.Dataset` for local files and the registry.

`Dataset.load(data_file=...)` takes a local file or folder (any format the data layer reads:
alpaca, sharegpt, openai messages, plain text, preference, embedding records...);
`Dataset.load(name=...)` or `Dataset.load(dataset_id=...)` (Qianfan's `qianfan_dataset_id=`
too) one registered before: trainers register each dataset they train on, and `save(name=)`
registers one by hand. `create_from_pyobj(rows)` holds rows in memory, as `Model.batch_run`
returns them; `save(data_file=)` writes them out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tuneforge.data.dataset_info import resolve_dataset
from tuneforge.data.read import read_rows
from tuneforge.errors import ConfigError, NotFoundError
from tuneforge.paths import atomic_write
from tuneforge.registry import Registry
from tuneforge.settings import Settings


class Dataset:
    """A dataset: a local file/folder (`path`), registered (`id`), or rows held in memory."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, name: str | None = None,
                 id: str | None = None, rows: Sequence[dict[str, Any]] | None = None,  # noqa: A002
                 file_type: str = "auto") -> None:
        self.path = Path(path) if path is not None else None
        self.name = name or (self.path.stem if self.path is not None else None)
        self.id = id
        self.file_type = file_type
        self._rows = list(rows) if rows is not None else None
        self._count: int | None = None  # a file's records, counted once (load, register)

    # -- making one --------------------------------------------------------------------------

    @classmethod
    def load(cls, data_file: str | os.PathLike[str] | None = None, *, name: str | None = None,
             dataset_id: str | None = None, qianfan_dataset_id: str | None = None,
             file_type: str = "auto", settings: Settings | None = None,
             **kwargs: Any) -> Dataset:
        """A local file or folder (`data_file`), or a registered dataset by `name` or id.

        Raises:
            ConfigError: none of data_file, name, dataset_id given, or an unknown argument.
            NotFoundError: the file, or the registered dataset, does not exist.
            DataError: the file cannot be read (names the file and line).
        """
        if kwargs:
            raise ConfigError.one(f"unknown argument(s) {', '.join(sorted(kwargs))}; expected "
                                  "data_file, name, dataset_id", field=next(iter(kwargs)),
                                  source="Dataset.load")
        registered = dataset_id or qianfan_dataset_id
        if data_file is not None:
            path = Path(data_file).expanduser()
            if not path.exists():
                raise NotFoundError("data file", str(data_file), hint=(
                    "expected a local file or folder (json, jsonl, csv, txt, parquet)"))
            dataset = cls(path.resolve(), name=name, file_type=file_type)
            dataset.count()  # reads it once: a broken file fails here, naming file and line
            return dataset
        if registered is None and name is None:
            raise ConfigError.one("expected data_file=, name= or dataset_id=",
                                  field="data_file", source="Dataset.load")
        record = Registry.open(settings or Settings()).get_dataset(registered or str(name))
        return cls(record.path, name=record.name, id=record.id)

    @classmethod
    def create_from_pyobj(cls, data: Sequence[dict[str, Any]] | dict[str, list[Any]],
                          name: str | None = None) -> Dataset:
        """Rows held in memory: a list of dicts, or a dict of columns."""
        if isinstance(data, dict):
            columns = list(data)
            data = [dict(zip(columns, values, strict=True))
                    for values in zip(*data.values(), strict=True)]
        return cls(name=name, rows=data)

    # -- reading -----------------------------------------------------------------------------

    @property
    def reference(self) -> str:
        """What RunConfig's `dataset` takes: the file or folder path.

        Raises:
            ConfigError: rows only in memory; `save(data_file=...)` them first.
        """
        if self.path is None:
            raise ConfigError.one("expected a dataset with a file; save(data_file=...) the "
                                  "rows held in memory first", field="dataset", source="Dataset")
        return str(self.path)

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every record, as the file holds it (txt lines as {"text": line})."""
        if self._rows is not None:
            yield from self._rows
            return
        spec = resolve_dataset(self.reference, Path("."), self.file_type)
        for file in spec.files:
            for row, _ in read_rows(file, spec.file_type):
                yield row

    def list(self) -> list[dict[str, Any]]:
        """All records (Qianfan's `Dataset.list()`)."""
        return list(self.rows())

    def count(self) -> int:
        if self._rows is not None:
            return len(self._rows)
        if self._count is None:
            self._count = sum(1 for _ in self.rows())
        return self._count

    def __len__(self) -> int:
        return self.count()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.rows()

    # -- keeping -----------------------------------------------------------------------------

    def save(self, data_file: str | os.PathLike[str] | None = None, *, name: str | None = None,
             settings: Settings | None = None) -> Dataset:
        """Write the rows to `data_file` (JSONL, or a JSON list for .json; atomically) and/or
        register the dataset under `name`; returns the dataset saved."""
        target = self
        if data_file is not None:
            path = Path(data_file).expanduser().resolve()
            rows = self.list()
            if path.suffix.lower() == ".json":
                text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
            else:
                text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, text)
            target = Dataset(path, name=name or self.name)
        if name is not None or data_file is None:
            target = target.register(name=name, settings=settings)
        return target

    def register(self, *, name: str | None = None, settings: Settings | None = None) -> Dataset:
        """Record the dataset in the registry (once per path and name); sets `id`."""
        record = Registry.open(settings or Settings()).add_dataset(
            self.reference, name=name or self.name, records=self.count())
        self.id, self.name = record.id, record.name
        return self

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else f"{len(self._rows or [])} rows"
        return f"Dataset(name={self.name!r}, id={self.id!r}, {where})"
