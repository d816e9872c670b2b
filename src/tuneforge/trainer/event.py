"""Qianfan's `qianfan.trainer.event`, from the pipeline core."""

from tuneforge.pipeline.event import Event, EventHandler, dispatch_event

__all__ = ["Event", "EventHandler", "dispatch_event"]
