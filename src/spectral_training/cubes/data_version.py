"""A short hash that names the data a model was trained on."""

from __future__ import annotations

import hashlib

import pandas as pd


def dataset_version(sample_index: pd.DataFrame) -> str:
    """A hash of every stored sample's content hash: changes whenever the data changes."""
    digest = hashlib.sha256()
    for h in sample_index.sort_values("store_index")["content_hash"].astype(str):
        digest.update(h.encode())
    return digest.hexdigest()[:16]
