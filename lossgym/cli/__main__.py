"""`python -m lossgym.cli ...`, as the `lossgym` script."""

from lossgym.cli import app

app()
