"""The one exception hierarchy of tuneforge.

Every user mistake is a `UserError`: the CLI prints it as one line and exits 2, the REST
service answers 4xx with it. Anything else is a bug and keeps its traceback.
Messages read *where: what: expected ..., got ...*.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_LISTED = 20


@dataclass(frozen=True)
class Issue:
    """One problem at one place: a file (or request), a 1-based line, a field path."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [p for p in (where, self.field, self.message) if p]
        return ": ".join(parts)


class TuneforgeError(Exception):
    """Base of every tuneforge error; never raised directly."""

    status_code = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UserError(TuneforgeError):
    """A mistake the user can fix: CLI exit 2, HTTP 4xx."""

    status_code = 400


class _IssuesError(UserError):
    """A user error that carries every problem found, not just the first."""

    status_code = 422

    def __init__(self, issues: Sequence[Issue], *, hint: str | None = None) -> None:
        if not issues:
            raise ValueError("an error with issues needs at least one issue")
        self.issues = list(issues)
        shown = [str(i) for i in self.issues[:MAX_LISTED]]
        more = len(self.issues) - len(shown)
        text = "\n".join(shown) + (f"\n... and {more} more" if more > 0 else "")
        super().__init__(text, hint=hint)

    @property
    def first(self) -> Issue:
        """The first problem, the one a one-line report shows."""
        return self.issues[0]

    @property
    def file(self) -> str | None:
        return self.first.file

    @property
    def line(self) -> int | None:
        return self.first.line

    @property
    def field(self) -> str | None:
        return self.first.field


class ConfigError(_IssuesError):
    """A configuration value or key is wrong: names the source, line and field."""

    @classmethod
    def one(
        cls,
        message: str,
        *,
        field: str | None = None,
        source: str | None = None,
        line: int | None = None,
    ) -> ConfigError:
        """Build a ConfigError holding a single issue."""
        return cls([Issue(message, file=source, line=line, field=field)])


class DataError(_IssuesError):
    """A dataset row or file is wrong: names the file, the 1-based line and the field."""

    @classmethod
    def one(
        cls,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> DataError:
        """Build a DataError holding a single issue."""
        return cls([Issue(message, file=file, line=line, field=field)])


class NotFoundError(UserError):
    """A named thing (dataset, model, run, template) does not exist."""

    status_code = 404

    def __init__(self, kind: str, name: str, *, hint: str | None = None) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} not found: {name!r}", hint=hint)


class StateError(UserError):
    """An action does not fit the current state of a run, e.g. resuming a running run."""

    status_code = 409


class UnsupportedError(UserError):
    """The hardware, the installed libraries or tuneforge lack a requested feature."""

    status_code = 400

    def __init__(self, feature: str, reason: str, *, hint: str | None = None) -> None:
        self.feature = feature
        self.reason = reason
        super().__init__(f"{feature}: {reason}", hint=hint)


class OverloadedError(UserError):
    """The service is at capacity (a full request queue): retry later. HTTP 503."""

    status_code = 503


class ForbiddenError(UserError):
    """A request names something outside what the service may touch (a path outside its
    roots, remote code). HTTP 403; `field` names the request field."""

    status_code = 403

    def __init__(self, message: str, *, field: str | None = None,
                 hint: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message, hint=hint)


class TooLargeError(UserError):
    """An upload is larger than the service accepts. HTTP 413."""

    status_code = 413

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class InternalError(TuneforgeError):
    """A bug in tuneforge: shown with its traceback."""
