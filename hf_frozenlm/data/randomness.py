"""Where training augmentation draws its randomness: one generator per (run seed, epoch, example).

A crop, a frame position or a point subset drawn from a shared random stream would depend on how many batches were
drawn before it, and the data loader fetches one batch ahead of the step being trained: a run resumed from a
checkpoint would draw from a stream that had already moved past the next batch. Seeding each example's draw with
(seed, epoch, example id) instead makes what an example gets a function of the run, not of its history, so a resumed
run augments exactly as the uninterrupted one. The training loop numbers the training examples (`example_id`) and
keeps `epoch` current.
"""

from __future__ import annotations

import numpy as np

EXAMPLE_ID = "example_id"


class ExampleRandomness:
    """Per-example generators for training collators: `rng(example)` for an example of the training split."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.epoch = 0

    @classmethod
    def of(cls, value) -> "ExampleRandomness":
        """An ExampleRandomness as given, or a new one for a seed."""
        return value if isinstance(value, cls) else cls(int(value or 0))

    def rng(self, example: dict) -> np.random.Generator:
        if EXAMPLE_ID not in example:
            from ..errors import DataError

            raise DataError(f"Training examples need an {EXAMPLE_ID!r} column to draw their augmentation "
                           "(`with_example_ids(split)` adds it; the training loop does).")
        return np.random.default_rng([self.seed, self.epoch, int(example[EXAMPLE_ID])])


def with_example_ids(split):
    """The split with an `example_id` column numbering its rows (kept when it has one)."""
    return split if EXAMPLE_ID in split.column_names else split.add_column(EXAMPLE_ID, list(range(len(split))))
