"""Repeated augmentation (Hoffer et al. 2020; Berman et al. 2019), as DeiT trains (`--repeated_aug`, 3 repeats).

Each epoch, a seeded permutation of the dataset has every index repeated `repeats` times in a row, and consecutive
copies are dealt to different ranks, so each process sees another augmentation of the same image in the same step.
As DeiT's sampler, an epoch keeps the length of a plain one (about N / ranks samples per rank, here rounded up to
whole batches): the schedule in epochs means what it means without repeats, and each epoch covers about N / repeats
distinct images, each `repeats` times.

The copies of an example must be augmented differently, yet augmentation is drawn per (seed, epoch, example id)
(data/randomness.py). So the sampler yields `copy * N + index` and the training set is seen through
`RepeatedAugmentationDataset`, which returns example `index` with the id `id * repeats + copy`: each copy draws its
own crop, RandAugment and erasing, still as a function of the run alone (resumes stay exact).

Trainer hands the sampler to accelerate, which deals whole batches of one global stream to the processes in turn
(batch j to process j mod ranks). This sampler therefore yields that global stream: rank r's k-th batch is global
batch k * ranks + r, so after accelerate's sharding every rank holds exactly its share (`rank_indices`).
"""

from __future__ import annotations

import math

import numpy as np
from torch.utils.data import Dataset, Sampler

from .randomness import EXAMPLE_ID


class RepeatedAugmentationDataset(Dataset):
    """The training split seen through repeated augmentation: item `copy * N + index` is example `index`, with an
    `example_id` of its own for each copy (`id * repeats + copy`)."""

    def __init__(self, base, repeats: int):
        self.base = base
        self.repeats = repeats

    def __len__(self) -> int:
        return len(self.base) * self.repeats

    def __getitem__(self, item: int) -> dict:
        copy, index = divmod(int(item), len(self.base))
        example = dict(self.base[index])
        example[EXAMPLE_ID] = int(example.get(EXAMPLE_ID, index)) * self.repeats + copy
        return example


class RepeatedAugmentationSampler(Sampler[int]):
    def __init__(self, dataset_size: int, num_replicas: int = 1, batch_size: int = 1, repeats: int = 3,
                 seed: int = 0):
        if dataset_size < 1 or num_replicas < 1 or batch_size < 1 or repeats < 1:
            raise ValueError("RepeatedAugmentationSampler needs a non-empty dataset, and ranks, batch size and repeats "
                             f">= 1 (got {dataset_size}, {num_replicas}, {batch_size}, {repeats}).")
        self.dataset_size = dataset_size
        self.num_replicas = num_replicas
        self.batch_size = batch_size
        self.repeats = repeats
        self.seed = seed
        self.epoch = 0
        # Samples per rank and epoch: a plain epoch's share, rounded up to whole batches.
        self.per_rank = math.ceil(math.ceil(dataset_size / num_replicas) / batch_size) * batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def repeated_stream(self) -> np.ndarray:
        """This epoch's permutation with every index repeated `repeats` times in a row (copies adjacent), each copy
        encoded as `copy * N + index` (`RepeatedAugmentationDataset` decodes it)."""
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.dataset_size)
        copies = np.tile(np.arange(self.repeats), self.dataset_size)
        return copies * self.dataset_size + np.repeat(order, self.repeats)

    def rank_indices(self, rank: int, full: bool = False) -> list[int]:
        """What rank `rank` trains on this epoch (encoded items, see `repeated_stream`): every `num_replicas`-th
        entry of the repeated stream from `rank` on (`full`: the whole stream, `repeats` x N / ranks entries; else
        the epoch's share, `per_rank` entries)."""
        stream = self.repeated_stream()
        padded = math.ceil(len(stream) / self.num_replicas) * self.num_replicas
        stream = np.resize(stream, padded)  # wraps around to give every rank the same count
        share = stream[rank::self.num_replicas]
        return share.tolist() if full else np.resize(share, self.per_rank).tolist()

    def __iter__(self):
        shares = [self.rank_indices(rank) for rank in range(self.num_replicas)]
        for start in range(0, self.per_rank, self.batch_size):
            for share in shares:
                yield from share[start:start + self.batch_size]

    def __len__(self) -> int:
        return self.per_rank * self.num_replicas
