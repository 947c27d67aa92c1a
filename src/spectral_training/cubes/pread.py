"""One plain positioned read that fills its buffer: ``os.preadv`` releases the GIL and needs no
HDF5 lock, so the store reader and the raw-file reader both use it where the bytes on disk are
the values in memory."""

from __future__ import annotations

import os


def pread_exact(fd: int, buffer: memoryview, offset: int, what: str = "a sample's chunk") -> None:
    """Fill ``buffer`` with the file's bytes from ``offset`` (a short read only happens at the
    end of the file or on a signal, so read on until full); OSError naming ``what`` at the end
    of the file."""
    while len(buffer):
        got = os.preadv(fd, [buffer], offset)
        if got <= 0:
            raise OSError(f"unexpected end of file at byte {offset} while reading {what}")
        buffer, offset = buffer[got:], offset + got
