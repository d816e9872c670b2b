"""What a request may touch: paths inside the server's roots, and who may ask.

Every path a request names (dataset_path, output_dir, model_path, lora_adapter, ...) is
resolved, symlinks followed, against the server's working directory and must land inside
one of the roots (default: TUNEFORGE_HOME and the working directory); `..` and symlink
escapes land outside and answer 403 naming the field. A model named by an alias, a run id
or a hub id (already in the local cache; nothing is downloaded) is no path and passes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

from tuneforge.config.presets import is_model_alias
from tuneforge.errors import ForbiddenError, UserError

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


class PathPolicy:
    """The roots inside which request paths must resolve."""

    def __init__(self, roots: Sequence[Path | str], base: Path | None = None) -> None:
        self.base = (base or Path.cwd()).resolve()
        self.roots = tuple(dict.fromkeys(self._resolve(Path(r)) for r in roots))

    def _resolve(self, path: Path) -> Path:
        path = path.expanduser()
        return (path if path.is_absolute() else self.base / path).resolve()

    def path(self, value: str, field: str) -> Path:
        """`value` as an absolute path inside a root.

        Raises:
            ForbiddenError: it resolves (symlinks followed) outside every root.
        """
        if "\x00" in value:
            raise ForbiddenError("expected a path without NUL characters", field=field)
        resolved = self._resolve(Path(value))
        if not any(resolved == root or resolved.is_relative_to(root) for root in self.roots):
            raise ForbiddenError(
                f"{value!r} resolves to {resolved}, outside the server's roots; expected a "
                f"path inside {', '.join(str(r) for r in self.roots)}", field=field,
                hint="start the server with --root to allow another folder")
        return resolved

    def source(self, value: str, field: str, runs: Path) -> str:
        """A model or adapter reference: an alias, a run id or a hub id pass as they are;
        anything that is (or looks like) a path must be inside a root. Returns the value to
        use (a path made absolute)."""
        if is_model_alias(value) or ("/" not in value and (runs / value).is_dir()):
            return value
        local = Path(value).expanduser()
        local = local if local.is_absolute() else self.base / local
        if value.startswith(("/", ".", "~")) or value.endswith(".gguf") or local.exists():
            return str(self.path(value, field))
        return value  # a hub id: loaded from the local cache only (HF_HUB_OFFLINE)


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """A server reachable from other machines must have an API token.

    Raises:
        UserError: `host` is not loopback and no token is set.
    """
    if not is_loopback(host) and not token:
        raise UserError(f"serve: --host {host} exposes the server beyond this machine; set "
                        "TUNEFORGE_API_TOKEN (clients then send Authorization: Bearer "
                        "<token>)", hint="or keep the default --host 127.0.0.1")
