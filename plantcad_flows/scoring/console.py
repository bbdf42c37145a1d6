"""transformers' console output (progress bars, load reports) moved into a run's log file.

Here because only `scoring/` imports transformers; the CLI's quiet console (cli/console.py) uses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable


def transformers_to_file(to_file: logging.Handler) -> Callable[[], None]:
    """transformers' progress bars and load reports off the console, its records into the log
    file; returns what undoes it."""
    from transformers.utils import logging as tlog

    bars = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    tlog.disable_default_handler()
    library = logging.getLogger("transformers")
    library.addHandler(to_file)

    def undo() -> None:
        library.removeHandler(to_file)
        tlog.enable_default_handler()
        if bars:
            tlog.enable_progress_bar()

    return undo
