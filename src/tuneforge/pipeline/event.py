"""Events of actions and the handlers that receive them (Qianfan's `qianfan.trainer.event`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.pipeline.consts import ActionState


@dataclass
class Event:
    """One point of an action's execution: which action, its state, a description, and data
    (for Running: the progress; for Error: the error)."""

    action_id: str | None
    action_state: ActionState
    description: str | None = None
    data: Any = None

    def __init__(self, action_id: str | None, state: ActionState | None = None,
                 description: str | None = None, data: Any = None, *,
                 action_state: ActionState | None = None) -> None:
        # Qianfan's constructor names the state `state`; its attribute is `action_state`
        chosen = state if state is not None else action_state
        if chosen is None:
            raise TypeError("Event() needs a state")
        self.action_id, self.action_state = action_id, ActionState(chosen)
        self.description, self.data = description, data

    def __str__(self) -> str:
        return (f"Event(action_id={self.action_id!r}, state={self.action_state.value}, "
                f"description={self.description!r}, data={self.data!r})")


class EventHandler:
    """Receives the events of a pipeline; subclass it and override `dispatch`."""

    def dispatch(self, event: Event) -> None:
        """Called once per event, in order; the default does nothing."""


def dispatch_event(event_handler: EventHandler | None = None,
                   event: Event | None = None) -> None:
    """Give `event` to `event_handler` when both are there."""
    if event_handler is not None and event is not None:
        event_handler.dispatch(event)
