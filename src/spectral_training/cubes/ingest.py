"""Ingestion: scan a raw dataset folder, validate every file, tile it, append it to the store.

Two steps, and each file's pixels are read once:

1. :func:`scan_folder` reads the header of every supported file (:func:`.readers.read_cube_header`:
   no pixel), checks it (readable, a cube, big enough for a tile, the dataset's band count) and
   returns an :class:`IngestionPlan` with the accepted files and the rejected ones with reasons.
2. :func:`append_plan` reads each accepted file's pixels, rejects the file when they cannot be
   read or when more than ``max_nonfinite_file`` of its values are NaN/Inf, tiles it, repairs or
   rejects non-finite tiles, and appends new tiles (by content hash) to the store. A file
   rejected here is listed with its reason beside the scan's rejections (the append's
   ``failed_files``, the report's ``rejected``).

With ``strict``, the first rejected file raises :class:`IngestionError`; one found during the
append also rolls the store back to what it was before the run (a store the run created is
removed). Files under the raw folder are only ever opened read-only.

This module holds the dataset folder, the scan (step 1), the sample index and the report;
:mod:`.ingest_plan` the parameters, the plan and the rejection rules; :mod:`.ingest_append`
step 2.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .ingest_append import _window_text, append_plan
# IngestionError and nonfinite_fraction stay importable from here, where callers find ingestion.
from .ingest_plan import (  # noqa: F401
    FileEntry,
    IngestionError,
    IngestionParams,
    IngestionPlan,
    Rejections,
    _read_header,
    band_count_mismatch,
    nonfinite_fraction,
)
from .readers import SUPPORTED_SUFFIXES, CubeHeader
from .splits import BUFFER, block_size_warning, block_split_of, split_of, validate_block_px, validate_fractions
from .store import CubeStore

log = logging.getLogger(__name__)

INDEX_COLUMNS = {
    "store_index": "int64", "sample_id": "str", "source_file": "str", "window": "str", "row": "int32",
    "col": "int32", "content_hash": "str", "label": "int64", "split": "str",
}


# ---- dataset folders --------------------------------------------------------------------------
def check_dataset_name(name: str) -> str:
    """A dataset name is a plain folder name: no path separator, no '..', not empty."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or ".." in name:
        raise ValueError(
            f"dataset name {name!r} is not a plain folder name: use the name of a folder under "
            f"data/01_raw/ (letters, digits, '_', '-'), with no '/', '\\' or '..'"
        )
    if name.startswith(".") or any(ord(ch) < 32 for ch in name):
        raise ValueError(f"dataset name {name!r} is not a plain folder name (hidden or control characters)")
    return name


def resolve_dataset_folder(raw_root: str | Path) -> Path:
    """The raw folder of a dataset; an error lists the datasets that do exist when it is missing."""
    folder = Path(raw_root)
    check_dataset_name(folder.name)
    if not folder.is_dir():
        parent = folder.parent
        existing = sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")) if parent.is_dir() else []
        listing = ", ".join(existing) if existing else "none yet (run `kedro run --pipeline demo_data` for the demo)"
        raise FileNotFoundError(
            f"dataset '{folder.name}' has no folder {folder}. Datasets that exist: {listing}. "
            f"Put your files in {folder}/ or pass --params dataset=<one of those>."
        )
    return folder


def list_candidate_files(folder: Path) -> tuple[list[Path], list[dict]]:
    """Supported files under ``folder`` (recursive, sorted) and the skipped ones with a reason."""
    supported, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in Path(rel).parts):
            continue  # hidden files and folders (.DS_Store, .ipynb_checkpoints) are not data
        if path.suffix.lower() in SUPPORTED_SUFFIXES:
            supported.append(path)
        elif path.name.lower() not in ("readme", "readme.md", "readme.txt", "licence", "license", "license.txt"):
            skipped.append(
                {"file": rel, "reason": f"unsupported file type '{path.suffix or path.name}': "
                 f"convert it to one of {', '.join(sorted(SUPPORTED_SUFFIXES))} or move it out of the folder"}
            )
    return supported, skipped


def class_of(rel: str, label_source: str, use_folders: bool) -> str | None:
    parts = rel.split("/")
    if label_source == "folders" or (label_source == "auto" and use_folders):
        return parts[0] if len(parts) > 1 else None
    return None


def folders_look_like_classes(rels: list[str]) -> bool:
    """``auto`` reads class sub-folders when every file sits in one of at least two sub-folders."""
    tops = {r.split("/")[0] for r in rels if "/" in r}
    return bool(rels) and all("/" in r for r in rels) and len(tops) >= 2


# ---- step 1: scan ------------------------------------------------------------------------------
def scan_folder(
    raw_root: str | Path, params: IngestionParams, *, store: CubeStore | None = None, dataset: str | None = None
) -> IngestionPlan:
    """Read the header of every supported file (no pixel) and decide which ones can be ingested.

    The band count every file must have is the store's when it exists, else the most common
    one in the folder. With ``params.strict`` the first rejected file raises :class:`IngestionError`.
    What only the pixels show (unreadable data, too many non-finite values) is checked by the
    append, which reads them.
    """
    folder = resolve_dataset_folder(raw_root)
    files, skipped = list_candidate_files(folder)
    rels = [p.relative_to(folder).as_posix() for p in files]
    use_folders = params.label_source == "folders" or (
        params.label_source == "auto" and folders_look_like_classes(rels)
    )
    info = store.info if store is not None and store.exists() else None

    reject = Rejections(params.strict)
    for entry in skipped:
        reject(entry["file"], entry["reason"])

    candidates: list[tuple[FileEntry, CubeHeader]] = []
    for path, rel in tqdm(list(zip(files, rels)), desc="scan", unit="file", disable=not params.show_progress):
        try:
            header = _read_header(path, params)
        except Exception as err:
            reject.unreadable(rel, err)
            continue
        c, h, w = header.shape
        if h < params.tile_size or w < params.tile_size:
            reject(rel, f"image is {h}x{w} px, smaller than tile_size {params.tile_size}. Fix: lower ingestion.tile_size")
            continue
        entry = FileEntry(rel, [c, h, w], class_of(rel, params.label_source, use_folders), header.has_label_map,
                          plain_pixels=header.plain_pixels)
        candidates.append((entry, header))

    num_bands = info["num_bands"] if info else _most_common_band_count([e for e, _ in candidates])
    accepted: list[FileEntry] = []
    for entry, cube in candidates:
        if entry.shape[0] != num_bands:
            where = f"the store {store.path}" if info else "most files of the dataset"
            reject(entry.file, band_count_mismatch(entry.shape[0], num_bands, where))
            continue
        accepted.append(entry)

    metadata_source = next((header for entry, header in candidates if entry in accepted), None)
    class_names = list(info["class_names"]) if info else []
    for entry in accepted:
        if entry.class_name is not None and entry.class_name not in class_names:
            class_names.append(entry.class_name)  # new classes go last so old labels keep their index
    if info is None:
        class_names = sorted(class_names)

    return IngestionPlan(
        dataset=dataset or folder.name,
        raw_root=str(folder),
        num_bands=num_bands,
        band_names=(info["band_names"] if info else metadata_source.band_names if metadata_source else None),
        wavelengths_nm=(info["wavelengths_nm"] if info else metadata_source.wavelengths_nm if metadata_source else None),
        class_names=class_names,
        accepted=accepted,
        rejected=reject.items,
        params=asdict(params),
    )


def _most_common_band_count(entries: list[FileEntry]) -> int | None:
    if not entries:
        return None
    counts = Counter(e.shape[0] for e in entries)
    best = max(counts.values())
    # On a tie the first file in sorted order decides, so the choice is reproducible.
    return next(e.shape[0] for e in entries if counts[e.shape[0]] == best)


# ---- step 3: index and report ------------------------------------------------------------------
def build_sample_index(store: CubeStore, splits: dict[str, float], block_px: int | None = None) -> pd.DataFrame:
    """One row per stored sample: id, source, window, hash, label, split.

    The split is a pure function of the sample id: of the id itself when ``block_px`` is None,
    else of the file and the ``block_px`` block of the tile's corner, with tiles reaching into
    a block of another split set aside as ``"buffer"`` (see :mod:`.splits`).
    """
    fractions = validate_fractions(splits)
    block_px = validate_block_px(block_px)
    if not store.exists():
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in INDEX_COLUMNS.items()})
    ids = store.column("sample_ids")
    windows = store.column("window")
    index = pd.DataFrame({
        "store_index": np.arange(len(ids), dtype=np.int64),
        "sample_id": ids.astype(str),
        "source_file": store.column("source_file").astype(str),
        "window": [_window_text(w) for w in windows],
        "row": windows[:, 0] if len(windows) else np.zeros(0, np.int32),
        "col": windows[:, 1] if len(windows) else np.zeros(0, np.int32),
        "content_hash": store.column("content_hash").astype(str),
        "label": store.column("labels").astype(np.int64),
    })
    if block_px is None:
        index["split"] = [split_of(sid, fractions) for sid in index["sample_id"]]
        return index
    tile_hw = [(int(h), int(w)) for h, w in windows[:, 2:4]] if len(windows) else []
    warning = block_size_warning(block_px, max((max(hw) for hw in tile_hw), default=0))
    if warning:
        log.warning(warning)
    index["split"] = [block_split_of(sid, fractions, block_px, hw) for sid, hw in zip(index["sample_id"], tile_hw)]
    buffered = int((index["split"] == BUFFER).sum())
    if buffered:
        log.info("block split (%d px): %d of %d tiles reach into a block of another split and are set aside as '%s'",
                 block_px, buffered, len(index), BUFFER)
    return index


def build_report(plan: IngestionPlan, record: dict, index: pd.DataFrame, store: CubeStore) -> dict:
    """The ingestion report: ingested and rejected files, with counts of tiles, duplicates, repairs."""
    per_file = record.get("per_file", {})
    # A cube's non-finite fraction is measured by the append (in per_file); a series scan's is in the plan.
    ingested = [
        {"file": e.file, "shape_chw": e.shape, "class": e.class_name,
         "nonfinite_fraction": None if e.nonfinite_fraction is None else round(e.nonfinite_fraction, 6),
         **per_file.get(e.file, {})}
        for e in plan.accepted if e.file not in {f["file"] for f in record.get("failed_files", [])}
    ]
    rejected = list(plan.rejected) + list(record.get("failed_files", []))
    return {
        "dataset": plan.dataset,
        "raw_folder": plan.raw_root,
        "store": str(store.path) if store.exists() else None,
        "ingested": ingested,
        "rejected": rejected,
        "rejected_tiles": record.get("rejected_tiles", []),
        "counts": {
            "files_ingested": len(ingested),
            "files_rejected": len(rejected),
            "tiles_cut": record.get("tiles_total", 0),
            "tiles_appended": record.get("appended", 0),
            "duplicates": record.get("duplicates", 0),
            "tiles_rejected": len(record.get("rejected_tiles", [])),
            "repaired_tiles": record.get("repaired_tiles", 0),
            "repaired_values": record.get("repaired_values", 0),
            "samples_in_store": int(len(index)),
            "samples_per_split": {k: int(v) for k, v in index["split"].value_counts().sort_index().items()},
        },
        "num_bands": plan.num_bands,
        "class_names": plan.class_names,
        "params": plan.params,
    }


def ingest_folder(raw_root: str | Path, store_path: str | Path, params: IngestionParams) -> tuple[dict, pd.DataFrame]:
    """All three steps in one call (for scripts, tests and benchmarks): returns report and index."""
    store = CubeStore(store_path)
    plan = scan_folder(raw_root, params, store=store)
    record = append_plan(store, plan, params)
    index = build_sample_index(store, params.splits, params.split_block_px)
    return build_report(plan, record, index, store), index


@dataclass
class PendingAppend:
    """What the ingestion node hands to the store's catalog dataset: the append is done on save.

    The store is appendable, so the catalog entry's dataset appends instead of overwriting, and
    tiles stream from the raw files into the store without being held in memory together.
    """

    plan: IngestionPlan
    params: IngestionParams

    def write_into(self, store: CubeStore) -> dict:
        return append_plan(store, self.plan, self.params)
