"""The progress bar of ``enhance`` and ``evaluate``."""

from __future__ import annotations


def progress_bar(*columns, quiet: bool = False):
    """A transient rich ``Progress`` on stderr (stdout keeps only results), off when ``quiet`` or when
    stderr is not a terminal: there rich cannot redraw, and a transient bar leaves only a blank line
    in the log or pipe."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(*columns, console=console, disable=quiet or not console.is_terminal, transient=True)
