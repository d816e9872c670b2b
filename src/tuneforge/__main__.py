"""`python -m tuneforge` runs the CLI."""

from tuneforge.cli.main import main

main()
