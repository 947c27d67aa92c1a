"""Ingestion's plan and rules: the parameters, the plan a scan makes, how a file is rejected,
and how a raw file is read with the ingestion's options (used by the scan and the append)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .readers import CubeFileError, CubeHeader, PlainPixels, RawCube, read_cube, read_cube_header
from .splits import validate_block_px, validate_fractions
from .tiling import NAN_POLICIES

log = logging.getLogger("spectral_training.cubes.ingest")

LABEL_SOURCES = ("auto", "folders", "maps", "none")
TILES_PER_BATCH = 64


@dataclass
class IngestionParams:
    """Everything ingestion reads from ``parameters_ingestion.yml``."""

    tile_size: int = 32
    stride: int | None = None  # None: tile_size (no overlap)
    layout: str = "auto"
    cube_key: str | None = None
    labels_key: str = "labels"
    scale: float | None = None
    label_source: str = "auto"
    nan_policy: str = "band_mean"
    max_nonfinite_tile: float = 0.01
    max_nonfinite_file: float = 0.25
    strict: bool = False
    compression: str | None = None
    splits: dict = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    split_block_px: int | None = None  # None: split per tile; B: per B x B block of each file
    show_progress: bool = True

    @classmethod
    def from_dict(cls, raw: dict) -> "IngestionParams":
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(
                f"ingestion parameters: unknown key(s) {sorted(unknown)}; known keys are {sorted(known)}"
            )
        params = cls(**raw)
        params.validate()
        return params

    def validate(self) -> None:
        if int(self.tile_size) < 1:
            raise ValueError(f"ingestion.tile_size must be a positive number of pixels, got {self.tile_size}")
        if self.stride is not None and int(self.stride) < 1:
            raise ValueError(f"ingestion.stride must be positive or null, got {self.stride}")
        if self.layout not in ("auto", "HWC", "CHW"):
            raise ValueError(f"ingestion.layout '{self.layout}' is unknown: use auto, HWC or CHW")
        if self.label_source not in LABEL_SOURCES:
            raise ValueError(f"ingestion.label_source '{self.label_source}' is unknown: use one of {LABEL_SOURCES}")
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"ingestion.nan_policy '{self.nan_policy}' is unknown: use one of {NAN_POLICIES}")
        for name in ("max_nonfinite_tile", "max_nonfinite_file"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"ingestion.{name} is a fraction between 0 and 1, got {getattr(self, name)}")
        self.splits = validate_fractions(self.splits)
        self.split_block_px = validate_block_px(self.split_block_px)

    @property
    def effective_stride(self) -> int:
        return int(self.stride or self.tile_size)


@dataclass
class FileEntry:
    file: str  # relative to the raw folder, with forward slashes
    shape: list[int]  # (C, H, W)
    class_name: str | None
    has_label_map: bool
    # A series scan reads the data and records it here; a cube's is measured when its pixels are
    # read, by the append, and reported from the append's record.
    nonfinite_fraction: float | None = None
    # Where the scan found the pixels as plain bytes (the header's); the append reads them there
    # while the file keeps that size and time. A dict after the plan's JSON round trip.
    plain_pixels: PlainPixels | None = None

    def __post_init__(self):
        if isinstance(self.plain_pixels, dict):
            self.plain_pixels = PlainPixels(**self.plain_pixels)


@dataclass
class IngestionPlan:
    """The outcome of the scan: what will be appended and what was rejected, with reasons."""

    dataset: str
    raw_root: str
    num_bands: int | None
    band_names: list[str] | None
    wavelengths_nm: list[float] | None
    class_names: list[str]
    accepted: list[FileEntry] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "IngestionPlan":
        data = dict(raw)
        data["accepted"] = [FileEntry(**entry) for entry in data.get("accepted", [])]
        return cls(**data)


class IngestionError(RuntimeError):
    """A problem that stops ingestion (with ``strict=true``, any rejected file)."""


class Rejections:
    """The files a scan (or the append, for what only pixels show) rejects, each with its reason,
    added to ``items``; with ``strict`` the first one raises :class:`IngestionError` instead
    (shared by the cube and the series ingestion)."""

    def __init__(self, strict: bool, items: list[dict] | None = None):
        self.strict = strict
        self.items: list[dict] = [] if items is None else items

    def __call__(self, rel: str, reason: str) -> None:
        self.items.append({"file": rel, "reason": reason})
        log.warning("rejected %s: %s", rel, reason)
        if self.strict:
            raise IngestionError(f"{rel}: {reason} (strict=true makes the first problem fatal; set strict=false to skip it)")

    def unreadable(self, rel: str, err: Exception) -> None:
        """A file its reader refused (a :class:`CubeFileError` with its fix) or failed on."""
        if isinstance(err, CubeFileError):
            self(rel, f"{err.reason} Fix: {err.fix}")
        else:  # a reader bug or an exotic file must not stop the folder
            self(rel, f"could not be read ({type(err).__name__}: {err}). Fix: check the file opens in its own tools")


def nonfinite_fraction(data: np.ndarray) -> float:
    """Fraction of NaN/Inf values; one cheap sum decides for the usual all-finite cube."""
    if not data.size:
        return 1.0
    if np.isfinite(data.sum(dtype=np.float32)):  # NaN/Inf propagate; an overflow falls through
        return 0.0
    return float(1.0 - np.count_nonzero(np.isfinite(data)) / data.size)


def too_many_nonfinite(fraction: float, params: IngestionParams) -> str:
    """The rejection reason for a file above ``max_nonfinite_file``."""
    return (f"{fraction:.1%} of its values are non-finite (NaN/Inf), above max_nonfinite_file="
            f"{params.max_nonfinite_file}. Fix: mask or fill the invalid pixels, or raise the threshold")


def band_count_mismatch(file_bands: int, expected: int, where: str) -> str:
    """The rejection reason for a file whose band count is not the dataset's."""
    return (f"has {file_bands} bands but {where} has {expected}. "
            f"Fix: ingest it as its own dataset, or resample it to {expected} bands")


def _reading_options(params: IngestionParams) -> dict:
    # Photos are cropped and resized to one tile, so the scan's checks see what is stored.
    return {"cube_key": params.cube_key, "layout": params.layout, "scale": params.scale,
            "labels_key": params.labels_key, "photo_size": int(params.tile_size)}


def _read(path: Path, params: IngestionParams) -> RawCube:
    return read_cube(path, **_reading_options(params))


def _read_header(path: Path, params: IngestionParams) -> CubeHeader:
    return read_cube_header(path, **_reading_options(params))
