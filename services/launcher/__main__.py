"""`python -m services.launcher` is the `recsys` command."""

from services.launcher.cli import main

main()
