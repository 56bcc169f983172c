"""Progress text on stderr for long command-line runs.

On a terminal one line is rewritten in place (a bar with a step counter); anywhere
else (a pipe, a CI log, a test) only the first step and each quarter of the way are
written, one line each, so a log gets five lines or so, not one per step.
``quiet`` prints nothing. Progress never goes to stdout, which carries the results.
"""

from __future__ import annotations

import sys
from typing import TextIO

BAR_WIDTH = 24


class Progress:
    """Counts steps out of a known total and shows the current one."""

    def __init__(self, total: int, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.inline = bool(getattr(self.stream, "isatty", lambda: False)())
        self._dirty = False
        self._quarter = -1  # the last quarter written when not inline

    def step(self, what: str) -> None:
        """Announce the step about to run."""
        if self.quiet:
            return
        filled = BAR_WIDTH * self.done // self.total
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        line = f"[{bar}] {self.done + 1}/{self.total} {what}"
        if self.inline:
            self.stream.write("\r\x1b[K" + line)
            self._dirty = True
        else:
            quarter = 4 * self.done // self.total
            if quarter != self._quarter:
                self._quarter = quarter
                self.stream.write(line + "\n")
        self.stream.flush()
        self.done += 1

    def note(self, text: str) -> None:
        """A line of its own (server started, warnings), never overwritten."""
        if self.quiet:
            return
        self.finish()
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._dirty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._dirty = False
