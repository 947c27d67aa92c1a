"""Reading a cube whose pixels the scan found as plain bytes in its file (:class:`.cube_headers.PlainPixels`):
whole, or straight into tiles. Both use positioned reads and no HDF5 call, so they run beside a
thread that writes HDF5, and both trust the scan's offset only while the file keeps the size and
modification time the scan saw (otherwise they return None and the caller reads the file through
its reader, which checks it all again)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .cube_checks import CubeFileError
from .cube_headers import PlainPixels
from .pread import pread_exact
from .readers import _apply_scale
from .tiling import _cut_slab, checked_windows


# Band planes read and cut together: small enough to stay in the CPU's cache between the read and
# the cut, big enough that the reading thread gives up and takes back the GIL only a few times
# per file (each time may wait for a thread that writes the store).
SLAB_BYTES = 1 << 20


@contextmanager
def _open_unchanged(path: Path, plain: PlainPixels) -> Iterator[int | None]:
    """A read-only descriptor of ``path`` while it has the size and time of ``plain``, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise CubeFileError(path, f"the file cannot be opened ({exc.strerror}).",
                            "check that it exists and is readable, then run ingestion again.") from exc
    try:
        stat = os.fstat(fd)
        yield fd if (stat.st_size, stat.st_mtime_ns) == (plain.file_size, plain.file_mtime_ns) else None
    finally:
        os.close(fd)


def _read_at(fd: int, values: np.ndarray, offset: int, path: Path) -> None:
    try:
        pread_exact(fd, memoryview(values.reshape(-1).view(np.uint8)), offset, "the cube's pixels")
    except OSError as exc:
        raise CubeFileError(path, f"the file ends before its cube does ({exc}).", "copy or export the file again.") from exc


def _scale_of(dtype: np.dtype, scale: float | None) -> float:
    """The factor :func:`.readers._apply_scale` applies, for the compiled copy: ``scale`` for
    integer data, else 1."""
    return float(scale) if scale is not None and dtype.kind in "iu" else 1.0


def read_plain_cube(path: str | Path, shape: Sequence[int], plain: PlainPixels, scale: float | None = None) -> np.ndarray | None:
    """The float32 ``(C, H, W)`` cube, equal to what :func:`.readers.read_cube` returns (integers
    times ``scale``), read with one positioned read; None when the file changed since ``plain``
    was found, and for values wider than 4 bytes (a full-size copy of those would outweigh the
    result; ``read_cube`` converts them in slabs).

    Raises:
        CubeFileError: the file cannot be opened, or ends before the cube does.
    """
    path, dtype = Path(path), np.dtype(plain.dtype)
    if dtype.itemsize > 4:
        return None
    with _open_unchanged(path, plain) as fd:
        if fd is None:
            return None
        values = np.empty(tuple(shape), dtype=dtype)
        _read_at(fd, values, plain.offset, path)
    data = values if dtype == np.float32 else values.astype(np.float32)
    _apply_scale(data, dtype, scale)
    return data


def read_plain_tiles(path: str | Path, shape: Sequence[int], plain: PlainPixels, windows: np.ndarray,
                     scale: float | None = None) -> tuple[np.ndarray, int] | None:
    """The float32 ``(k, C, T, T)`` tiles at ``windows`` (rows of row, col, T, T) of the cube,
    equal to :func:`.tiling.cut` of what :func:`.readers.read_cube` returns, and the count of
    NaN/Inf values in the whole cube; None when the file changed since ``plain`` was found, and
    for float16 values (the compiled copy takes integers, float32 and float64).

    The cube is read a few band planes at a time (``SLAB_BYTES``) into a buffer that stays in the
    CPU's cache, where a compiled loop counts its non-finite values and copies it into every
    window: the pixels cross memory once, instead of being read into a cube, then read again to
    check and to cut.

    Raises:
        CubeFileError: the file cannot be opened, or ends before the cube does.
        ValueError: a window is not inside the image, or not of the first window's size.
    """
    path, dtype = Path(path), np.dtype(plain.dtype)
    if dtype == np.float16:
        return None
    bands, height, width = (int(n) for n in shape)
    windows, t = checked_windows(windows, height, width)
    factor = _scale_of(dtype, scale)
    with _open_unchanged(path, plain) as fd:
        if fd is None:
            return None
        tiles = np.empty((len(windows), bands, t, t), dtype=np.float32)
        plane_bytes = height * width * dtype.itemsize
        per_slab = max(1, min(bands, SLAB_BYTES // plane_bytes))
        slab = np.empty((per_slab, height, width), dtype=dtype)
        nonfinite = 0
        for first in range(0, bands, per_slab):
            part = slab[: min(per_slab, bands - first)]
            _read_at(fd, part, plain.offset + first * plane_bytes, path)
            nonfinite += int(_cut_slab(part, first, windows, factor, tiles))
    return tiles, nonfinite
