"""DataLoaders whose order the engine owns, so that a resumed run sees exactly the same batches.

`make_loader` builds a torch DataLoader around an `EpochBatchSampler`:

* the order of epoch e is a pure function of (seed, e): a permutation drawn from a private
  generator, never from the global RNG (the plain RandomSampler draws its seed from the global
  RNG, which would make the order depend on everything else that ran before);
* under DDP each rank takes its shard of that order (padded so every rank gets the same number
  of batches, as DistributedSampler does). `batch_size` is the *global* batch: each of the N
  ranks loads batch_size / N samples, and rank r's k-th batch holds positions
  k*batch_size + r, + r + N, ... of the epoch's order, so the N batches of one step together are
  exactly the batch one process would have taken: N processes train the same recipe as one;
* the engine can start an epoch at batch k (a resumed run) without loading batches 0..k-1, and
  can limit an epoch to its first N batches (overfit mode);
* every sample carries a seed derived from (seed, epoch, position in the epoch). Inside a worker
  process the global torch/numpy/random RNGs are re-seeded with it just before
  `dataset[index]`, so random augmentations do not depend on which worker loads the sample or
  on where a resumed epoch started. With num_workers=0 the dataset runs in the main process and
  draws from the main RNG stream, which the checkpoint saves and restores instead.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from spectral_training.training import distributed
from spectral_training.training.device import resolve_num_workers
from spectral_training.training.rng import mix_seed

SampleKey = tuple[int, int]  # (index into the dataset, per-sample seed)


class SeededSampleDataset(Dataset):
    """Wraps a map-style dataset so items are fetched by (index, seed) keys.

    In a worker process the global RNGs are seeded with the key's seed before the fetch; in the
    main process they are left alone. Attribute access falls through to the wrapped dataset, so
    `loader.dataset.band_names` keeps working; the original is `loader.dataset.dataset`.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey | int) -> Any:
        if isinstance(key, tuple):
            index, sample_seed = key
            if get_worker_info() is not None:
                torch.manual_seed(sample_seed)
                np.random.seed(sample_seed % 2**32)
                random.seed(sample_seed)
        else:  # plain index, e.g. someone indexing loader.dataset directly
            index = key
        return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not yet set (unpickling in a spawned worker): avoid recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


class EpochBatchSampler(Sampler[list[SampleKey]]):
    """Yields lists of (index, seed) keys; the order is fixed by (seed, epoch).

    Args:
        num_samples: length of the dataset.
        batch_size: samples per step over all ranks; each rank loads batch_size / world_size.
        shuffle: permute the order each epoch; False keeps dataset order.
        seed: base seed of the order and of the per-sample seeds.
        drop_last: drop the last, incomplete batch.
        loader_generator: the DataLoader's generator; re-seeded per epoch so worker base seeds
            (and `worker_init_fn`) are a function of (seed, epoch) too.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
        loader_generator: torch.Generator | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_samples < 1:
            raise ValueError("cannot make a loader over an empty dataset (0 samples)")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.loader_generator = loader_generator
        self.epoch = 0
        self.start_batch = 0
        self.batch_limit: int | None = None

    # ----------------------------------------------------------------- control
    def set_epoch(self, epoch: int, *, start_batch: int = 0, batch_limit: int | None = None) -> None:
        """Choose what the next iteration yields: batches [start_batch, batch_limit) of `epoch`."""
        self.epoch = epoch
        self.start_batch = start_batch
        self.batch_limit = batch_limit
        if self.loader_generator is not None:
            self.loader_generator.manual_seed(mix_seed(self.seed, epoch, 1))

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch, "start_batch": self.start_batch,
                "batch_limit": self.batch_limit, "shuffle": self.shuffle, "batch_size": self.batch_size}

    # ----------------------------------------------------------------- order
    def epoch_order(self, epoch: int) -> list[int]:
        """Every dataset index of `epoch`, in order, across all ranks (before sharding)."""
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def _rank_keys(self) -> list[SampleKey]:
        order = self.epoch_order(self.epoch)
        epoch_seed = mix_seed(self.seed, self.epoch, 2)
        keys = [(index, (epoch_seed + position) % 2**63) for position, index in enumerate(order)]
        world, rank = distributed.world_size(), distributed.rank()
        if world > 1:
            padded_length = -(-len(keys) // world) * world
            keys = (keys * (padded_length // len(keys) + 1))[:padded_length]
            keys = keys[rank::world]
        return keys

    def rank_batch_size(self) -> int:
        """Samples per batch on this rank: the global batch_size divided by the world size."""
        world = distributed.world_size()
        if self.batch_size % world:
            raise ValueError(
                f"loader.batch_size {self.batch_size} is the global batch and must divide evenly over the "
                f"{world} training processes; use a multiple of {world} (e.g. {-(-self.batch_size // world) * world})"
            )
        return self.batch_size // world

    def _batches(self) -> list[list[SampleKey]]:
        keys = self._rank_keys()
        size = self.rank_batch_size()
        batches = [keys[i : i + size] for i in range(0, len(keys), size)]
        if self.drop_last and batches and len(batches[-1]) < size:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[SampleKey]]:
        batches = self._batches()
        stop = len(batches) if self.batch_limit is None else min(self.batch_limit, len(batches))
        yield from batches[self.start_batch : stop]

    def __len__(self) -> int:
        """Batches in a full epoch on this rank (ignores start_batch and batch_limit)."""
        per_rank = -(-self.num_samples // distributed.world_size())
        size = self.rank_batch_size()
        if self.drop_last:
            return per_rank // size
        return -(-per_rank // size)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker with base_seed + worker_id, and base_seed comes from the loader's
    # generator, which EpochBatchSampler.set_epoch re-seeds from (seed, epoch). Seed numpy and
    # random from it too (torch does not) so code outside __getitem__ is reproducible as well.
    worker_seed = torch.initial_seed()
    np.random.seed(worker_seed % 2**32)
    random.seed(worker_seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    num_workers: int | str = 0,
    drop_last: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    pin_memory: bool | None = None,
    prefetch_factor: int | None = None,
    persistent_workers: bool = True,
    multiprocessing_context: str | None = None,
) -> DataLoader:
    """A DataLoader whose order the training engine controls (see the module docstring).

    Args:
        dataset: a map-style dataset (len + getitem) returning dicts such as
            {"cube": FloatTensor (C, H, W), "sample_id": str, ...}.
        batch_size: samples per batch; under DDP the global batch (each rank loads batch_size / ranks).
        shuffle: True for training (a new seeded permutation each epoch), False for evaluation.
        seed: base seed of the order; use the TrainConfig seed.
        num_workers: loader worker processes; 0 loads in the main process; "auto" picks from the
            core count (training/device.py: 0 on 2 cores, where a worker costs ~10 % of the step).
        drop_last: drop the last incomplete batch.
        collate_fn: batch collation; torch's default stacks tensors and lists strings.
        pin_memory: None = pin when CUDA is available.
        prefetch_factor: batches prefetched per worker (workers only).
        persistent_workers: keep workers between epochs (applied only when num_workers > 0).
        multiprocessing_context: e.g. "spawn"; None = the platform default.
    Returns:
        A DataLoader whose `batch_sampler` is an EpochBatchSampler and whose `dataset` is a
        SeededSampleDataset wrapping `dataset`.
    """
    num_workers = resolve_num_workers(num_workers)
    generator = torch.Generator().manual_seed(mix_seed(seed, 0, 1))
    batch_sampler = EpochBatchSampler(
        len(dataset),  # type: ignore[arg-type]
        batch_size,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
        loader_generator=generator,
    )
    worker_options: dict[str, Any] = {}
    if num_workers > 0:
        worker_options["persistent_workers"] = persistent_workers
        worker_options["worker_init_fn"] = _seed_worker
        if prefetch_factor is not None:
            worker_options["prefetch_factor"] = prefetch_factor
        if multiprocessing_context is not None:
            worker_options["multiprocessing_context"] = multiprocessing_context
    return DataLoader(
        SeededSampleDataset(dataset),
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        generator=generator,
        **worker_options,
    )


def engine_sampler(loader: Any) -> EpochBatchSampler | None:
    """The EpochBatchSampler of a loader made by `make_loader`, else None."""
    sampler = getattr(loader, "batch_sampler", None)
    return sampler if isinstance(sampler, EpochBatchSampler) else None


def batch_sample_ids(batch: Any) -> list[str]:
    """The sample ids of a batch dict ("sample_id" list/tuple or tensor), [] when absent."""
    if isinstance(batch, dict):
        ids = batch.get("sample_id", batch.get("sample_ids"))
        if ids is None:
            return []
        if isinstance(ids, torch.Tensor):
            return [str(v) for v in ids.tolist()]
        if isinstance(ids, (list, tuple)):
            return [str(v) for v in ids]
        return [str(ids)]
    return []


def batch_size_of(batch: Any) -> int:
    """Number of samples in a batch: the first dim of "cube", else the number of sample ids, else 1."""
    if isinstance(batch, dict):
        cube = batch.get("cube")
        if isinstance(cube, torch.Tensor) and cube.ndim > 0:
            return int(cube.shape[0])
        ids = batch_sample_ids(batch)
        if ids:
            return len(ids)
    elif isinstance(batch, torch.Tensor) and batch.ndim > 0:
        return int(batch.shape[0])
    elif isinstance(batch, Sequence) and batch and isinstance(batch[0], torch.Tensor):
        return int(batch[0].shape[0])
    return 1
