"""tuneforge: fine-tune, publish, serve and evaluate open models.

Nothing heavy is imported here: `import tuneforge` must stay cheap for the CLI and server.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
