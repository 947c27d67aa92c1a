"""Kedro dataset classes the catalog needs and kedro-datasets lacks."""

from .cube_store_dataset import CubeStoreDataset
from .raw_folder_dataset import RawFolderDataset
from .versioned import VersionedArtifactDataset, all_versions, latest_version

__all__ = ["CubeStoreDataset", "RawFolderDataset", "VersionedArtifactDataset", "all_versions", "latest_version"]
