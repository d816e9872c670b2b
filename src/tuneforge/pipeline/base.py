"""Actions and the pipeline that chains them (Qianfan's `qianfan.trainer.base`).

An action turns an input dict into an output dict; a pipeline runs its actions in order, each
one's output the next one's input, and tells its event handlers about every action: Preceding
before it, Done (with its output) or Error (with the exception) after it, and Stopped when it
was stopped. Actions report their own progress as Running events.

`stop()` (from another thread) ends the run after the current action, which is asked to stop
too (a training action stops at its next step boundary); `resume()` runs again from the
action that was stopped or failed, with the input it had, never redoing finished actions.
`dumps()`/`loads()` carry that state as JSON, so a new process can resume.
"""

from __future__ import annotations

import json
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from tuneforge.errors import ConfigError, NotFoundError, StateError
from tuneforge.pipeline.consts import ActionState
from tuneforge.pipeline.event import Event, EventHandler, dispatch_event


class BaseAction(ABC):
    """A reusable, atomic step of a pipeline; subclasses implement `exec` and `resume`."""

    def __init__(self, id: str | None = None, name: str | None = None,  # noqa: A002 - Qianfan's
                 event_handler: EventHandler | None = None, **kwargs: Any) -> None:
        self.id = id or f"{self.action_type()}_{uuid.uuid4().hex[:8]}"
        self.name = name or self.id
        self.event_handler = event_handler
        self.state: ActionState | None = None
        self.input: dict[str, Any] | None = None  # the input of its latest run, for resume
        self.kwargs = kwargs

    @classmethod
    def action_type(cls) -> str:
        """The action's kind: its class name."""
        return cls.__name__

    @abstractmethod
    def exec(self, input: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        """Run the action on `input`; return its output."""

    @abstractmethod
    def resume(self, **kwargs: Any) -> dict[str, Any]:
        """Continue after a stop or failure (from the action's own saved progress)."""

    def stop(self, **kwargs: Any) -> None:  # noqa: B027 - optional, as in Qianfan
        """Ask a running action to stop; the default has nothing to stop."""

    def action_event(self, state: ActionState, msg: str = "", data: Any = None) -> None:
        """Record `state` and tell the event handler."""
        self.state = ActionState(state)
        dispatch_event(self.event_handler, Event(self.id, self.state, msg, data))

    def action_error_event(self, e: Exception) -> None:
        """Report that the action failed with `e`."""
        self.action_event(ActionState.Error, f"action {self.id} failed: {e}", e)

    def dumps(self) -> bytes | None:
        """The action's identity and state as JSON bytes."""
        return json.dumps({"type": self.action_type(), "id": self.id, "name": self.name,
                           "state": self.state.value if self.state else None,
                           "input": self.input}, default=str).encode()

    def loads(self, data: bytes) -> BaseAction:
        """Take identity and state from `dumps()` output; returns self."""
        saved = json.loads(data)
        if saved.get("type") != self.action_type():
            raise StateError(f"action {self.id}: expected saved {self.action_type()}, got "
                             f"{saved.get('type')!r}")
        self.id, self.name = saved["id"], saved["name"]
        self.state = ActionState(saved["state"]) if saved.get("state") else None
        self.input = saved.get("input")
        return self


class Pipeline(BaseAction):
    """Actions run in order, then `post_actions` on the result; see the module docstring."""

    def __init__(self, actions: Sequence[BaseAction], post_actions: Sequence[BaseAction] = (),
                 event_handler: EventHandler | None = None, **kwargs: Any) -> None:
        super().__init__(id=kwargs.pop("id", None), name=kwargs.pop("name", None),
                         event_handler=event_handler, **kwargs)
        self.actions = list(actions)
        self.post_actions = list(post_actions)
        ids = [a.id for a in [*self.actions, *self.post_actions]]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ConfigError.one(f"expected distinct action ids, got {', '.join(repeated)} "
                                  "more than once", field="actions", source="Pipeline")
        for action in [*self.actions, *self.post_actions]:
            if action.event_handler is None:
                action.event_handler = event_handler
        self.current: str | None = None  # the action running, or the one to resume from
        self.inputs: dict[str, Any] = {}  # each started action's input, for resume
        self.output: dict[str, Any] | None = None
        self._stop = threading.Event()

    def exec(self, input: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        """Run every action from the first."""
        return self.exec_from(input, 0, **kwargs)

    def exec_from(self, input: dict[str, Any] | None = None,  # noqa: A002
                  start: int | str | None = 0, **kwargs: Any) -> dict[str, Any]:
        """Run the actions from `start` (an index or an action id) on `input`.

        Returns the last action's output (post actions run on it too); when stopped, the
        output so far, and `current` names the action to resume from.

        Raises:
            NotFoundError: `start` names no action.
            Exception: what a failing action raised (after its Error event).
        """
        index = self._index(start)
        self._stop.clear()
        data: dict[str, Any] = dict(input or {})
        self.action_event(ActionState.Running, f"from {self.actions[index].id}"
                          if index < len(self.actions) else "")
        for action in self.actions[index:]:
            self.current = action.id
            self.inputs[action.id] = data
            if self._stop.is_set():
                action.action_event(ActionState.Stopped, "stopped before it started")
                self.action_event(ActionState.Stopped, f"stopped at {action.id}")
                return data
            data = self._run(action, data, **kwargs)
            if action.state is ActionState.Stopped:
                self.action_event(ActionState.Stopped, f"stopped at {action.id}")
                return data
        self.current = None
        self.output = data
        for action in self.post_actions:
            self._run(action, data, **kwargs)
        self.action_event(ActionState.Done, data=data)
        return data

    def resume(self, **kwargs: Any) -> dict[str, Any]:
        """Run again from the action that was stopped or failed, with its input.

        Raises:
            StateError: nothing to resume (the pipeline finished or never ran).
        """
        if self.current is None:
            raise StateError(f"pipeline {self.id}: expected a stopped or failed action to "
                             "resume, got none", hint="exec() runs it from the start")
        return self.exec_from(self.inputs.get(self.current), self.current, resume=True,
                              **kwargs)

    def stop(self, **kwargs: Any) -> None:
        """End the run after the current action, which is asked to stop too."""
        self._stop.set()
        for action in self.actions:
            if action.id == self.current:
                action.stop(**kwargs)

    def register_event_handler(self, event_handler: EventHandler,
                               action_id: str | None = None) -> None:
        """Send the events of `action_id` (default: the pipeline's and every action's) to
        `event_handler`.

        Raises:
            NotFoundError: no action has that id.
        """
        if action_id is None:
            self.event_handler = event_handler
            for action in [*self.actions, *self.post_actions]:
                action.event_handler = event_handler
            return
        self._action(action_id).event_handler = event_handler

    def __getitem__(self, action_id: str) -> BaseAction:
        return self._action(action_id)

    def dumps(self) -> bytes | None:
        """The pipeline's progress: where it stands, each action's state and inputs."""
        return json.dumps({
            "type": self.action_type(), "id": self.id, "name": self.name,
            "state": self.state.value if self.state else None, "current": self.current,
            "inputs": self.inputs, "output": self.output,
            "actions": [json.loads(a.dumps() or b"null") for a in self.actions],
        }, default=str).encode()

    def loads(self, data: bytes) -> Pipeline:
        """Take the progress saved by `dumps()` (the same actions, in the same order)."""
        saved = json.loads(data)
        ids = [a["id"] for a in saved.get("actions", []) if a]
        if ids != [a.id for a in self.actions]:
            raise StateError(f"pipeline {self.id}: expected saved actions "
                             f"{[a.id for a in self.actions]}, got {ids}")
        super().loads(json.dumps({k: saved[k] for k in ("type", "id", "name", "state")}).encode())
        for action, state in zip(self.actions, saved["actions"], strict=True):
            action.loads(json.dumps(state).encode())
        self.current, self.inputs, self.output = saved["current"], saved["inputs"], saved["output"]
        return self

    # -- internals ---------------------------------------------------------------------------

    def _run(self, action: BaseAction, data: dict[str, Any], *, resume: bool = False,
             **kwargs: Any) -> dict[str, Any]:
        # Preceding or Running: the process died in the middle of it (loaded from disk)
        unfinished = action.state not in (None, ActionState.Done)
        action.input = data
        action.action_event(ActionState.Preceding, f"{action.name} starts", data)
        try:
            if resume and unfinished:
                output = action.resume(**kwargs)
            else:
                output = action.exec(data, **kwargs)
        except Exception as error:
            action.action_error_event(error)
            self.action_event(ActionState.Error, f"failed at {action.id}", error)
            raise
        if action.state is not ActionState.Stopped:
            action.action_event(ActionState.Done, f"{action.name} done", output)
        return output

    def _index(self, start: int | str | None) -> int:
        if start is None:
            return 0
        if isinstance(start, int):
            if not 0 <= start <= len(self.actions):
                raise NotFoundError("action", str(start), hint=(
                    f"expected an index in 0..{len(self.actions)}"))
            return start
        return self.actions.index(self._action(start))

    def _action(self, action_id: str) -> BaseAction:
        for action in [*self.actions, *self.post_actions]:
            if action.id == action_id:
                return action
        raise NotFoundError("action", action_id, hint=(
            f"actions: {', '.join(a.id for a in [*self.actions, *self.post_actions])}"))
