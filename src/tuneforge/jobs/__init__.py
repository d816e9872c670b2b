"""The training service's job queue (queue.py) and its worker processes (worker.py)."""
