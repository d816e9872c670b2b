"""The LazyLLM face: TrainableModule (module.py), its fine-tune frameworks (finetune.py) and
deploy methods (deploy.py), and the Document / Retriever that use a tuned embedding model
(rag.py). `tuneforge.TrainableModule`, `tuneforge.Document`, ... reach them lazily."""
