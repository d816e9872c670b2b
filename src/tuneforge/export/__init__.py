"""Export: a fine-tuned model merged into safetensors, optionally GGUF, with an Ollama Modelfile.

run.py is the workflow (`export_model`); merge.py finds the sources and merges the adapter;
chat_format.py turns the training chat template into per-turn pieces; modelfile.py writes
the Modelfile from them; gguf.py converts a Llama-architecture model to GGUF.
Nothing heavy is imported here: torch and transformers load inside the functions using them.
"""
