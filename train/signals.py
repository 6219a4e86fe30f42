"""Stopping a training run cleanly on SIGINT or SIGTERM.

The first signal asks the training loop to stop after the step it is taking: it writes a
checkpoint there and returns, and the program exits with status 0 and a line saying how to
resume. A second signal exits at once (`KeyboardInterrupt`), whatever the loop is doing; the last
checkpoint written stays usable, since checkpoints are written to a temporary folder and renamed.
"""

import signal
import threading
from collections.abc import Callable


SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A context in which SIGINT and SIGTERM request a stop instead of killing the process.

    Outside the main thread (where Python cannot install handlers) it does nothing.

    **Arguments:**

    - `log`: where the line acknowledging the first signal goes.
    """

    def __init__(self, log: Callable[[str], None] = print):
        self.log = log
        self.signal: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """Whether a signal has asked the run to stop."""
        return self.signal is not None

    def agree(self, requested_anywhere: bool) -> bool:
        """Take a stop that another process of the run was asked for (`requested_anywhere`: some
        process's `requested`, gathered from all of them), so that all stop at the same step;
        return `requested_anywhere`, the answer every process got. Not `requested`: a signal
        that arrives after this process gave its flag to the gathering (while it waits for the
        others) would make it stop alone, and the others wait for it at their next collective."""
        if requested_anywhere and self.signal is None:
            self.signal = "another process's signal"
        return requested_anywhere

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None:
            self._restore()
            raise KeyboardInterrupt(f"a second signal ({name}): exiting at once")
        self.signal = name
        self.log(f"{name}: finishing the current step, then writing a checkpoint "
                 "(send it again to exit at once)")

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        self._restore()
