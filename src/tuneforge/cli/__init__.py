"""The command-line face: typer commands that build a config, call the core, render."""
