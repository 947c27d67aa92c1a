"""Run an iterator on a thread, a few items ahead of its consumer.

Ingestion uses it so that reading, checking and cutting the next tiles (numpy, positioned reads
and compiled copies, which release the GIL) go on while the store writes the current ones.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_POLL_SECONDS = 0.05  # how soon a producer waiting for room notices that the consumer stopped


class _End:
    """The producer's last message: the error it raised, or None when it ran out of items."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


def run_ahead(items: Iterable[T], depth: int = 2, name: str = "run-ahead") -> Iterator[T]:
    """The items of ``items``, in order, produced on a thread at most ``depth`` items ahead.

    An exception the producer raises reaches the consumer where its item would have come, after
    every item produced before it. When the consumer stops early (an exception, a ``break``, the
    generator closed), the producer stops before its next item: the one it is making is finished
    and dropped, and ``items`` is closed on the producer's thread (its ``finally`` blocks run
    there). The thread has ended when this generator has: close it when the consumer may stop
    on an exception (``contextlib.closing``), since a traceback the caller keeps also keeps an
    unfinished generator, and its thread, alive.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1 item, got {depth}")
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(message) -> bool:
        """Put ``message`` when there is room; False when the consumer stopped first."""
        while not stop.is_set():
            try:
                handoff.put(message, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not offer(item):
                    return
            offer(_End())
        except BaseException as error:  # handed to the consumer, raised there
            offer(_End(error))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            message = handoff.get()
            if isinstance(message, _End):
                if message.error is not None:
                    raise message.error
                return
            yield message
    finally:
        stop.set()
        if not sys.is_finalizing():  # at interpreter exit a daemon thread may never run again
            thread.join()
