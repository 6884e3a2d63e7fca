"""Batches from a dataset, epoch after epoch, with a position that can be saved.

The batch sampler hands each worker ``(epoch, index)`` keys, so a sample's random
crop, flips and degradations depend on the seed, the epoch and the index only — not
on the number of workers or on what ran before. Iterating a :class:`Loader` goes on
forever, epoch after epoch (training is counted in iterations). ``state_dict()``
records the position of the next batch (epoch, batch within the epoch); a loader given
that state yields exactly the batches the original would have yielded next.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info
from torch.utils.data import default_collate as torch_collate

from engine.data.errors import DataError, loading_failure

Key = tuple[int, int]
Batch = dict[str, torch.Tensor]
#: The batch entry that carries the files skipped while it was made (from a worker to
#: the training process); the loader removes it before yielding the batch.
FAILED = "__failed_files__"


class EpochBatches(Sampler[list[Key]]):
    """Endless batches of ``(epoch, index)`` keys; each epoch a fresh seeded order.

    With ``world_size`` > 1 each process takes every ``world_size``-th item of the
    epoch's order (the same number for every process), so processes see disjoint data.
    A dataset smaller than one batch (six built-in photographs, batches of 16) is
    repeated within the epoch under new indices: index ``i`` reads item ``i % size``
    with its own random crop, so a batch holds no two identical samples.
    """

    def __init__(
        self,
        size: int,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool,
        drop_last: bool,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        per_batch = batch_size * world_size
        self.epoch_size = size if size >= per_batch else -(-per_batch // size) * size
        self.local = self.epoch_size // world_size
        if size == 0:
            raise DataError("the dataset is empty")
        self.start: Key = (0, 0)  # (epoch, batch within epoch) of the next batch

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.local, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def order(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch, 0x5A3D])
            order = rng.permutation(self.epoch_size)
        else:
            order = np.arange(self.epoch_size)
        if self.world_size > 1:
            order = order[self.rank : self.local * self.world_size : self.world_size]
        return order

    def __iter__(self) -> Iterator[list[Key]]:
        epoch, batch = self.start
        while True:
            order = self.order(epoch)
            for b in range(batch, self.batches_per_epoch):
                chunk = order[b * self.batch_size : (b + 1) * self.batch_size]
                yield [(epoch, int(i)) for i in chunk]
            epoch, batch = epoch + 1, 0


class Loader:
    """A DataLoader over ``EpochBatches`` that knows which batch comes next."""

    def __init__(
        self,
        dataset: Dataset[Batch],
        *,
        batch_size: int,
        workers: int,
        seed: int,
        shuffle: bool,
        drop_last: bool,
        pin_memory: bool = False,
        rank: int = 0,
        world_size: int = 1,
        where: str = "data.train",
        on_skip: Callable[[str], None] | None = None,
    ) -> None:
        self.dataset = dataset
        self.where = where  # the spec section, for messages
        self.on_skip = on_skip
        #: Every file skipped while loading (``on_bad_image: skip``), once each.
        self.skipped: list[str] = []
        self.sampler = EpochBatches(
            len(dataset),  # type: ignore[arg-type]  # torch's Dataset declares no __len__
            batch_size=batch_size,
            seed=seed,
            shuffle=shuffle,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
        )
        self.epoch, self.batch = 0, 0
        self._loader = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=pin_memory and torch.cuda.is_available(),
            collate_fn=partial(_collate_telling_failures, dataset),
            worker_init_fn=partial(_seed_worker, seed) if workers > 0 else None,
            generator=torch.Generator().manual_seed(seed),
        )

    def __len__(self) -> int:
        """Batches per epoch (iteration itself never ends)."""
        return self.sampler.batches_per_epoch

    def __iter__(self) -> Iterator[Batch]:
        self.sampler.start = (self.epoch, self.batch)
        try:
            for batch in self._loader:
                self._advance()
                self._tell(batch.pop(FAILED, ()))
                yield batch
        except DataError as exc:
            self.close()
            raise loading_failure(exc, self.where) from None
        except GeneratorExit:  # the caller stopped iterating; keep the workers
            raise
        except Exception as exc:  # a worker failed or died: one message, the workers stopped
            self.close()
            raise loading_failure(exc, self.where) from exc
        except BaseException:
            self.close()
            raise

    def _tell(self, failed: Sequence[str]) -> None:
        """Record (and pass to ``on_skip``) each newly skipped file once, whichever
        worker, and however many epochs, found it."""
        for reason in failed:
            if reason in self.skipped:
                continue
            self.skipped.append(reason)
            if self.on_skip is not None:
                self.on_skip(reason)

    def close(self) -> None:
        """Stop the worker processes now (iterating again starts new ones)."""
        # torch stops workers of an abandoned iterator only at garbage collection, and
        # then waits seconds for each; stopping them explicitly is immediate.
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self._loader._iterator = None

    def _advance(self) -> None:
        self.batch += 1
        if self.batch == self.sampler.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        """Where the next batch comes from; restore with :meth:`load_state_dict`."""
        s = self.sampler
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "seed": s.seed,
            "size": s.size,
            "batch_size": s.batch_size,
            "shuffle": s.shuffle,
            "drop_last": s.drop_last,
            "world_size": s.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        s = self.sampler
        mine = self.state_dict()
        changed = [
            f"{k} {state[k]!r} → {mine[k]!r}"
            for k in ("seed", "size", "batch_size", "shuffle", "drop_last", "world_size")
            if k in state and state[k] != mine[k]
        ]
        if changed:
            raise DataError(
                "cannot resume the data position: the data changed since the checkpoint ("
                + ", ".join(changed)
                + "); resume with the same data and batch size, or start a new run"
            )
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        if not 0 <= self.batch < s.batches_per_epoch:
            raise DataError(f"bad data position in checkpoint: batch {self.batch} of an epoch")


def make_loader(
    dataset: Dataset[Batch],
    *,
    batch_size: int,
    workers: int,
    seed: int,
    shuffle: bool,
    drop_last: bool,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
    where: str = "data.train",
    on_skip: Callable[[str], None] | None = None,
) -> Loader:
    """A resumable, endless loader over ``dataset``; see :class:`Loader`. ``where`` (the
    spec section) is named in the error a failing or killed worker stops it with;
    ``on_skip`` is told each file skipped while loading (in any worker), once."""
    return Loader(
        dataset,
        batch_size=batch_size,
        workers=workers,
        seed=seed,
        shuffle=shuffle,
        drop_last=drop_last,
        pin_memory=pin_memory,
        rank=rank,
        world_size=world_size,
        where=where,
        on_skip=on_skip,
    )


def _collate_telling_failures(dataset: Dataset[Batch], samples: Sequence[Batch]) -> Batch:
    """:func:`collate`, plus the files this process's copy of the dataset skipped since
    its last batch: a worker's dataset is its own copy, so this is how the training
    process learns of them."""
    batch = collate(samples)
    info = get_worker_info()
    source = info.dataset if info is not None else dataset
    take = getattr(source, "take_failed", None)
    failed = take() if take is not None else []
    if failed:
        batch[FAILED] = failed  # type: ignore[assignment]  # strings, removed by Loader
    return batch


def collate(samples: Sequence[Batch]) -> Batch:
    """Stack samples; images of different sizes in one batch get a clear error."""
    for key in samples[0]:
        shapes = {tuple(s[key].shape) for s in samples}
        if len(shapes) > 1:
            shown = ", ".join("x".join(map(str, s)) for s in sorted(shapes)[:3])
            raise DataError(
                f"images of different sizes in one batch ('{key}': {shown}); crop them "
                "(preprocess: crop with crop_size) or use batch_size: 1"
            )
    batch: Batch = torch_collate(list(samples))  # its stub returns Any
    return batch


def _seed_worker(seed: int, worker_id: int) -> None:
    """Seed the global generators of a worker (samples themselves use their own keys)."""
    value = (seed * 1000003 + worker_id) % 2**32
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
