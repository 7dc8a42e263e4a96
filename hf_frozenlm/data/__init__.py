"""Datasets for every task: builtins generated or shipped offline, and readers for the usual file formats.

Every loader returns a `datasets.DatasetDict` with train / validation / test (carved from train, seeded and
stratified where the labels are classes, when the source has no such split) and raises `DataError` with what it
found and what to pass instead. One module per kind of data: images, video, points, motion, vqa (2D VQA and
retrieval), scenes (3D QA), masked_digits (masks for the analysis).
"""

from ..errors import DataError
from .splits import carve_missing_splits, dataset_from_examples

__all__ = ["DataError", "carve_missing_splits", "dataset_from_examples"]
