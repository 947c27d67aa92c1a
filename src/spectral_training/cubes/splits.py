"""Train/val/test assignment as a pure function of the sample id (and, optionally, its block).

Two rules, both stable when files are added (an old sample's id never changes, so neither does
its split):

- per tile (``split_block_px: null``): a hash of the sample id ``<file>@<row>,<col>``. Right
  when tiles do not overlap and neighbouring tiles are not near-copies of each other.
- per block (``split_block_px: B``): a hash of the file and the B x B block
  ``(row // B, col // B)`` holding the tile's top-left corner, so a whole neighbourhood of a
  scene goes to one split. Use it when tiles overlap (stride < tile_size) or when one big scene
  is cut into many tiles: with a per-tile hash, overlapping tiles of one scene land in train
  and test and the test score measures memory, not generalisation. Take a block of several
  tiles, e.g. 4 x tile_size.

Overlapping tiles chain across block borders, so no assignment of whole tiles can keep train
and test apart by itself. A tile whose footprint reaches into a block of another split is
therefore put in the split :data:`BUFFER`, which no training, validation or test set reads:
what remains of each split never shares a pixel with another split. With B a multiple of
the stride and stride = tile_size no tile crosses a border and nothing is set aside.
"""

from __future__ import annotations

import hashlib
import numbers
import re
from collections.abc import Mapping

SPLITS = ("train", "val", "test")
BUFFER = "buffer"

# `<relative file>@<row>,<col>`; the file itself may contain '@' (e.g. "icon@2x.png").
_SAMPLE_ID = re.compile(r"(?P<file>.*)@(?P<row>\d+),(?P<col>\d+)", re.DOTALL)


def validate_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"split fractions: unknown split(s) {sorted(unknown)}; use train, val, test")
    values = {name: float(fractions.get(name, 0.0)) for name in SPLITS}
    if any(v < 0 for v in values.values()) or abs(sum(values.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions {values} must be >= 0 and add up to 1")
    return values


def validate_block_px(block_px) -> int | None:
    """``ingestion.split_block_px``: None, or a positive whole number of pixels."""
    if block_px is None:
        return None
    if isinstance(block_px, bool) or not isinstance(block_px, numbers.Integral) or block_px < 1:
        raise ValueError(
            f"ingestion.split_block_px is {block_px!r}; expected null (split per tile) or a positive"
            " whole number of pixels. Fix: use null, or a block of several tiles, e.g. 4 x tile_size."
        )
    return int(block_px)


def block_size_warning(block_px: int, tile_px: int) -> str | None:
    """The warning to log when a block is smaller than a tile, else None."""
    if block_px >= tile_px:
        return None
    return (
        f"ingestion.split_block_px={block_px} is smaller than the tile size {tile_px}: every tile then"
        f" crosses a block border, overlapping tiles may sit in different blocks, and tiles touching a"
        f" block of another split are set aside as '{BUFFER}' (often most of them). Fix: use a block of"
        f" several tiles, e.g. {4 * tile_px} (4 x tile_size)."
    )


def parse_sample_id(sample_id: str) -> tuple[str, int | None, int | None]:
    """(file, row, col) of ``<file>@<row>,<col>``; (sample_id, None, None) for any other id."""
    match = _SAMPLE_ID.fullmatch(sample_id)
    if match is None:
        return sample_id, None, None
    return match["file"], int(match["row"]), int(match["col"])


def split_of(sample_id: str, fractions: Mapping[str, float]) -> str:
    """The split a sample belongs to, from a hash of its id alone.

    Adding files never moves an existing sample: its id, and so its hash, does not change.
    """
    return _split_of_key(sample_id, fractions)


def block_key(file: str, block_row: int, block_col: int) -> str:
    """The text hashed for the split of one block of one file."""
    return f"{file}#block{block_row},{block_col}"


def block_split_of(
    sample_id: str, fractions: Mapping[str, float], block_px: int, tile_px: int | tuple[int, int]
) -> str:
    """The split of a tile under the block rule (see the module docstring), or :data:`BUFFER`.

    Args:
        sample_id: ``<file>@<row>,<col>`` (top-left corner of the tile); any other id is split
            as one block of its own, keyed by the whole id (e.g. a photo without a window).
        fractions: validated split fractions.
        block_px: the block side B in pixels.
        tile_px: the tile side, or (height, width): which blocks the tile's footprint touches.

    Returns:
        The split of the block holding the top-left corner, or :data:`BUFFER` when the tile
        also covers pixels of a block whose split differs.
    """
    file, row, col = parse_sample_id(sample_id)
    if row is None:
        return _split_of_key(block_key(file, 0, 0), fractions)
    height, width = (tile_px, tile_px) if isinstance(tile_px, numbers.Integral) else tile_px
    first_row, first_col = row // block_px, col // block_px
    last_row, last_col = (row + height - 1) // block_px, (col + width - 1) // block_px
    own = _split_of_key(block_key(file, first_row, first_col), fractions)
    for block_row in range(first_row, last_row + 1):
        for block_col in range(first_col, last_col + 1):
            if _split_of_key(block_key(file, block_row, block_col), fractions) != own:
                return BUFFER
    return own


def _split_of_key(key: str, fractions: Mapping[str, float]) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for name in SPLITS:
        cumulative += fractions.get(name, 0.0)
        if position < cumulative:
            return name
    return SPLITS[-1] if fractions.get(SPLITS[-1], 0.0) > 0 else max(fractions, key=fractions.get)
