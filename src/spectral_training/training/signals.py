"""Graceful stop on SIGTERM / SIGINT: the handler only sets a flag; the loop checks it after each
step, writes a checkpoint and returns with stopped_reason "signal".

A second SIGINT (Ctrl-C pressed twice) raises KeyboardInterrupt at once, for a user who does not
want to wait for the step to end. Handlers are installed only in the main thread (Python allows
no other) and the previous ones are put back on exit.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any, Callable

logger = logging.getLogger("spectral_training.training")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Context manager that turns SIGTERM/SIGINT into a stop flag.

    Attributes:
        requested: True once a stop signal arrived (or `request()` was called).
        signal_number: the signal that asked for the stop, None otherwise.
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.requested = False
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    def request(self, signal_number: int | None = None) -> None:
        """Ask for a stop without a signal (or on behalf of another rank)."""
        self.requested = True
        if self.signal_number is None:
            self.signal_number = signal_number

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.requested and signal_number == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, without the final checkpoint
        logger.warning(
            "received %s: finishing the current step, then writing a checkpoint and stopping "
            "(press Ctrl-C again to abort at once)",
            signal.Signals(signal_number).name,
        )
        self.request(signal_number)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signal_number in self.signals:
                self._previous[signal_number] = signal.signal(signal_number, self._handle)
        else:
            logger.debug("not in the main thread: SIGTERM/SIGINT handlers not installed")
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signal_number, previous in self._previous.items():
            # signal.signal returns None for handlers installed outside Python; SIG_DFL is the best stand-in.
            handler: Callable[..., Any] | int = previous if previous is not None else signal.SIG_DFL
            signal.signal(signal_number, handler)
        self._previous.clear()


def exit_code_for_signal(signal_number: int | None) -> int:
    """Shell convention for a process stopped by a signal: 128 + signal number (SIGINT -> 130,
    SIGTERM -> 143); 0 when there was no signal."""
    return 0 if signal_number is None else 128 + int(signal_number)
