"""Qianfan's `qianfan.trainer.model`: Model and Service, hosted by `tuneforge serve`."""

from tuneforge.pipeline.services import ChatCompletion, Completion, Embedding, Model, Service

__all__ = ["ChatCompletion", "Completion", "Embedding", "Model", "Service"]
