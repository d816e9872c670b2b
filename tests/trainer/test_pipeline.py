"""Pipeline and BaseAction: order, events, stop and resume, dumps/loads (user actions, as
Qianfan users write them)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tuneforge.errors import ConfigError, NotFoundError, StateError
from tuneforge.pipeline.base import BaseAction, Pipeline
from tuneforge.trainer.consts import ActionState
from tuneforge.trainer.event import Event, EventHandler


class Add(BaseAction):
    """Adds `amount` to input["total"]; reports one Running event."""

    def __init__(self, amount: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.amount, self.runs = amount, 0

    def exec(self, input: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        self.runs += 1
        self.action_event(ActionState.Running, "adding", {"step": 1, "total": 1})
        return {"total": (input or {}).get("total", 0) + self.amount}

    def resume(self, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError("a finished action is never resumed")


class Flaky(Add):
    """Fails on its first run; resume() finishes it."""

    def exec(self, input: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        self.seen = input
        self.runs += 1
        raise RuntimeError("disk full")

    def resume(self, **kwargs: Any) -> dict[str, Any]:
        return {"total": self.seen["total"] + self.amount}


class Waits(Add):
    """Runs until stop() is called, then reports Stopped."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(0, **kwargs)
        self.started, self.halt = threading.Event(), threading.Event()

    def exec(self, input: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        self.seen = input
        self.started.set()
        self.halt.wait(10)
        self.action_event(ActionState.Stopped, "stopped at a step boundary")
        return dict(input or {})

    def stop(self, **kwargs: Any) -> None:
        self.halt.set()

    def resume(self, **kwargs: Any) -> dict[str, Any]:
        return {"total": self.seen["total"] + 100}


class Recorder(EventHandler):
    def __init__(self) -> None:
        self.events: list[Event] = []

    def dispatch(self, event: Event) -> None:
        self.events.append(event)

    def trace(self) -> list[tuple[str | None, str]]:
        return [(e.action_id, e.action_state.value) for e in self.events]


def test_actions_run_in_order_with_every_event() -> None:
    recorder = Recorder()
    pipeline = Pipeline([Add(1, id="a"), Add(2, id="b")], event_handler=recorder, id="p")
    assert pipeline.exec({"total": 10}) == {"total": 13}
    assert recorder.trace() == [
        ("p", "Running"), ("a", "Preceding"), ("a", "Running"), ("a", "Done"),
        ("b", "Preceding"), ("b", "Running"), ("b", "Done"), ("p", "Done")]
    assert recorder.events[2].data == {"step": 1, "total": 1}
    assert pipeline.current is None and pipeline["b"].state == ActionState.Done


def test_a_failed_action_is_resumed_without_redoing_finished_ones() -> None:
    recorder = Recorder()
    first, flaky, last = Add(1, id="a"), Flaky(5, id="f"), Add(2, id="b")
    pipeline = Pipeline([first, flaky, last], event_handler=recorder, id="p")
    with pytest.raises(RuntimeError, match="disk full"):
        pipeline.exec({"total": 0})
    assert ("f", "Error") in recorder.trace() and pipeline.current == "f"
    assert isinstance(recorder.events[-2].data, RuntimeError)
    assert pipeline.resume() == {"total": 8}
    assert first.runs == 1 and last.runs == 1


def test_stop_from_another_thread_then_resume() -> None:
    waits = Waits(id="w")
    later = Add(1, id="later")
    pipeline = Pipeline([Add(1, id="a"), waits, later], id="p")
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(pipeline.exec({"total": 0})))
    thread.start()
    assert waits.started.wait(10)
    pipeline.stop()
    thread.join(10)
    assert pipeline.state == ActionState.Stopped and waits.state == ActionState.Stopped
    assert pipeline.current == "w" and later.runs == 0
    assert pipeline.resume() == {"total": 102}
    assert later.runs == 1 and pipeline.state == ActionState.Done


def test_dumps_and_loads_carry_the_progress_to_a_new_pipeline() -> None:
    pipeline = Pipeline([Add(1, id="a"), Flaky(5, id="f")], id="p")
    with pytest.raises(RuntimeError):
        pipeline.exec({"total": 1})
    saved = pipeline.dumps()
    assert saved is not None
    again = Pipeline([Add(1, id="a"), Flaky(5, id="f")], id="other").loads(saved)
    assert again.id == "p" and again.current == "f" and again["f"].state == ActionState.Error
    assert again.inputs["f"] == {"total": 2}
    with pytest.raises(StateError):
        Pipeline([Add(1, id="x")]).loads(saved)


def test_exec_from_and_handlers_per_action() -> None:
    only_b = Recorder()
    pipeline = Pipeline([Add(1, id="a"), Add(2, id="b")], id="p")
    pipeline.register_event_handler(only_b, action_id="b")
    assert pipeline.exec_from({"total": 5}, start="b") == {"total": 7}
    assert {action for action, _ in only_b.trace()} == {"b"}
    with pytest.raises(NotFoundError):
        pipeline.exec_from({}, start="nope")
    with pytest.raises(NotFoundError):
        pipeline.register_event_handler(only_b, action_id="nope")


def test_mistakes_are_clear() -> None:
    with pytest.raises(ConfigError, match="distinct action ids"):
        Pipeline([Add(1, id="a"), Add(2, id="a")])
    with pytest.raises(StateError, match="nothing|none"):
        Pipeline([Add(1)]).resume()
