"""events.jsonl: the run's Event records, as the pipeline's EventHandlers receive them.

One JSON object per line: action_id, action_state (Qianfan's ActionState names: Preceding,
Running, Done, Error, Stopped), description, data, time. Training writes its own action's
events; the pipeline (tuneforge.trainer) adds those of the other actions to the same file.
Lines are appended whole and flushed, so a reader following the file sees complete events.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

ActionStateName = Literal["Preceding", "Running", "Done", "Error", "Stopped"]


class EventLog:
    """Appends events to one events.jsonl; a disabled log (ranks other than 0) writes nothing."""

    def __init__(self, path: Path, action_id: str = "train", *, enabled: bool = True) -> None:
        self.path = path
        self.action_id = action_id
        self.enabled = enabled

    def emit(self, state: ActionStateName, description: str,
             data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append one event and return it."""
        event = {"action_id": self.action_id, "action_state": state,
                 "description": description, "data": data or {}, "time": time.time()}
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
        return event
