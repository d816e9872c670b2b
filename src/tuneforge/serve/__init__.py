"""Inference: one base model with named LoRA adapters, continuous batching and streaming.

`engine.Engine` is the transformers backend; `backend.Backend` is the interface a face (the
REST server, eval) calls, so another backend (vLLM) can be added beside it later.
"""
