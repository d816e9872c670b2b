"""LLaMA-Factory's dataset_info.json, read with its semantics unchanged.

A dataset is named either by a path (a file or a folder of same-type files) or by a key of
`dataset_dir/dataset_info.json`. Hub entries give a clear "not available offline" error
unless a local copy is present; a broken entry never stops the other entries from loading,
because entries are only parsed when asked for.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config.aliases import suggest
from tuneforge.data.read import SUFFIX_TYPES
from tuneforge.data.rows import Columns, FormatSpec, Tags
from tuneforge.errors import DataError, NotFoundError, UnsupportedError
from tuneforge.paths import PathEscapeError, safe_join

INFO_FILE = "dataset_info.json"
HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
ENTRY_KEYS = {
    *HUB_KEYS,
    "file_name",
    "file_sha1",
    "formatting",
    "ranking",
    "subset",
    "split",
    "folder",
    "num_samples",
    "columns",
    "tags",
}
MEDIA_COLUMNS = ("images", "videos", "audios")
COLUMN_KEYS = {*Columns.__dataclass_fields__, *MEDIA_COLUMNS}
FORMATTINGS = ("alpaca", "sharegpt", "openai")


@dataclass(frozen=True)
class DatasetSpec:
    """One resolved dataset: its files and how to read them."""

    name: str
    files: tuple[Path, ...]
    file_type: str = "auto"
    format: FormatSpec | None = None  # None: infer from the first record
    num_samples: int | None = None
    source: str | None = None  # dataset_info.json that defined it, for error locations
    extra: dict[str, Any] = field(default_factory=dict)


def _entry_line(text: str, name: str) -> int | None:
    match = re.search(rf'^\s*"{re.escape(name)}"\s*:', text, flags=re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else None


class DatasetInfo:
    """The parsed dataset_info.json of one dataset_dir."""

    def __init__(self, dataset_dir: Path) -> None:
        self.dir = dataset_dir
        self.path = dataset_dir / INFO_FILE
        self.text = ""
        self.entries: dict[str, Any] = {}
        if self.path.is_file():
            self.text = self.path.read_text(encoding="utf-8-sig")
            try:
                self.entries = json.loads(self.text)
            except json.JSONDecodeError as exc:
                raise DataError.one(
                    f"invalid JSON: {exc.msg} (column {exc.colno})",
                    file=str(self.path),
                    line=exc.lineno,
                ) from None
            if not isinstance(self.entries, dict):
                raise DataError.one(
                    "expected an object mapping names to datasets", file=str(self.path), line=1
                )

    def _error(self, name: str, key: str, message: str) -> DataError:
        return DataError.one(
            message,
            file=str(self.path),
            line=_entry_line(self.text, name),
            field=f"{name}.{key}" if key else name,
        )

    def resolve(self, name: str) -> DatasetSpec:
        """The spec of entry `name`; NotFoundError when there is none."""
        if name not in self.entries:
            where = str(self.path) if self.path.is_file() else f"{self.dir} (no {INFO_FILE})"
            raise NotFoundError(
                "dataset",
                name,
                hint=f"not a file, and not an entry of {where}{suggest(name, list(self.entries))}",
            )
        entry = self.entries[name]
        if not isinstance(entry, dict):
            raise self._error(name, "", f"expected an object, got {type(entry).__name__}")
        unknown = sorted(set(entry) - ENTRY_KEYS)
        if unknown:
            raise self._error(
                name,
                unknown[0],
                f"unknown key {unknown[0]!r}{suggest(unknown[0], sorted(ENTRY_KEYS))}",
            )
        self._check_media(name, entry)
        files = self._files(name, entry)
        return DatasetSpec(
            name=name,
            files=files,
            format=self._format(name, entry),
            num_samples=self._num_samples(name, entry),
            source=str(self.path),
            extra={k: entry[k] for k in ("subset", "split", "folder") if k in entry},
        )

    def _check_media(self, name: str, entry: dict[str, Any]) -> None:
        media = [c for c in MEDIA_COLUMNS if c in (entry.get("columns") or {})]
        if media:
            raise UnsupportedError(
                f"dataset {name!r}",
                f"multimodal columns ({', '.join(media)}) are not supported; "
                "tuneforge trains text models",
            )

    def _files(self, name: str, entry: dict[str, Any]) -> tuple[Path, ...]:
        hub = [k for k in HUB_KEYS if k in entry and k != "script_url"]
        if "file_name" not in entry:
            local = self._local_copy(name, entry)
            if local is not None:
                return local
            if hub or "script_url" in entry:
                key = hub[0] if hub else "script_url"
                raise UnsupportedError(
                    f"dataset {name!r}",
                    f"it lives on a hub ({key}: {entry[key]}) and is not available offline",
                    hint=f"put a local copy in {self.dir / name} or give it a file_name",
                )
            raise self._error(
                name,
                "file_name",
                "missing key 'file_name'; expected the data file or folder, or a hub url",
            )
        file_name = entry["file_name"]
        if not isinstance(file_name, str) or not file_name:
            raise self._error(name, "file_name", f"expected a file name, got {file_name!r}")
        try:
            target = safe_join(self.dir, file_name)
        except PathEscapeError:
            raise self._error(
                name,
                "file_name",
                f"{file_name!r} escapes the dataset directory "
                f"{str(self.dir)!r}; expected a path inside it",
            ) from None
        if not target.exists():
            raise NotFoundError(
                "data file",
                str(self.dir / file_name),
                hint=f"named by {name}.file_name in {self.path}",
            )
        if target.is_dir():
            folder = entry.get("folder")
            return self._folder_files(name, target / folder if folder else target)
        self._check_sha1(name, entry, target)
        if entry.get("split", "train") != "train":
            raise self._error(
                name, "split", f"a local file has only the 'train' split, got {entry['split']!r}"
            )
        return (target,)

    def _local_copy(self, name: str, entry: dict[str, Any]) -> tuple[Path, ...] | None:
        candidates = [self.dir / name]
        for key in HUB_KEYS:
            if isinstance(entry.get(key), str):
                candidates.append(self.dir / entry[key])
        for candidate in candidates:
            try:
                safe_join(self.dir, str(candidate.relative_to(self.dir)))
            except (PathEscapeError, ValueError):
                continue
            if candidate.is_dir():
                return self._folder_files(name, candidate)
            if candidate.is_file():
                return (candidate,)
        return None

    def _folder_files(self, name: str, folder: Path) -> tuple[Path, ...]:
        files = sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIX_TYPES
        )
        if not files:
            raise self._error(name, "file_name", f"the folder {str(folder)!r} holds no data files")
        types = {SUFFIX_TYPES[p.suffix.lower()] for p in files}
        if len(types) > 1:
            raise self._error(
                name,
                "file_name",
                f"the folder {str(folder)!r} mixes file types "
                f"{sorted(types)}; expected files of one type",
            )
        return tuple(files)

    def _check_sha1(self, name: str, entry: dict[str, Any], target: Path) -> None:
        expected = entry.get("file_sha1")
        if not expected:
            return
        actual = hashlib.sha1(target.read_bytes()).hexdigest()
        if actual != str(expected).lower():
            raise self._error(
                name,
                "file_sha1",
                f"expected sha1 {expected} (dataset_info.json), "
                f"but {target.name} has sha1 {actual}",
            )

    def _num_samples(self, name: str, entry: dict[str, Any]) -> int | None:
        value = entry.get("num_samples")
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise self._error(name, "num_samples", f"expected a positive integer, got {value!r}")
        return value

    def _format(self, name: str, entry: dict[str, Any]) -> FormatSpec | None:
        formatting = entry.get("formatting", "alpaca")
        if formatting not in FORMATTINGS:
            raise self._error(
                name, "formatting", f"expected one of {', '.join(FORMATTINGS)}, got {formatting!r}"
            )
        columns_raw = entry.get("columns") or {}
        tags_raw = entry.get("tags") or {}
        for key, allowed, label in (
            (columns_raw, COLUMN_KEYS, "columns"),
            (tags_raw, set(Tags.__dataclass_fields__), "tags"),
        ):
            unknown = sorted(set(key) - allowed)
            if unknown:
                raise self._error(
                    name,
                    f"{label}.{unknown[0]}",
                    f"unknown key {unknown[0]!r}{suggest(unknown[0], sorted(allowed))}",
                )
        ranking = bool(entry.get("ranking", False))
        defaults = (
            Columns()
            if formatting == "alpaca"
            else Columns(
                prompt=None,
                query=None,
                response=None,
                messages="messages" if formatting == "openai" else "conversations",
            )
        )
        columns = Columns(
            **{
                **defaults.__dict__,
                **{k: v for k, v in columns_raw.items() if k not in MEDIA_COLUMNS},
            }
        )
        tags = Tags(**tags_raw)
        if formatting == "openai" and not tags_raw:
            tags = Tags("role", "content", "user", "assistant", "tool", "function_call", "system")
        if ranking:
            kind = "pairwise"
        elif columns.kto_tag:
            kind = "kto"
        elif (
            formatting == "alpaca"
            and "response" not in columns_raw
            and set(columns_raw) <= {"prompt"}
            and columns_raw
        ):
            kind = "pt"  # LLaMA-Factory's pretraining entries: columns {prompt: text}
        else:
            kind = "sft"
        return FormatSpec(formatting, kind, columns, tags, ranking)  # type: ignore[arg-type]


def resolve_dataset(name: str, dataset_dir: Path, file_type: str = "auto") -> DatasetSpec:
    """A path (file or folder) or a dataset_info.json name -> DatasetSpec."""
    path = Path(name)
    if path.is_file():
        return DatasetSpec(name=path.stem, files=(path,), file_type=file_type)
    if path.is_dir() and not (path / INFO_FILE).is_file():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIX_TYPES)
        if not files:
            raise DataError.one("the folder holds no data files", file=str(path))
        return DatasetSpec(name=path.name, files=tuple(files), file_type=file_type)
    info = DatasetInfo(dataset_dir)
    if not info.entries and (path.suffix.lower() in SUFFIX_TYPES or "/" in name):
        raise NotFoundError("data file", name)
    return info.resolve(name)
