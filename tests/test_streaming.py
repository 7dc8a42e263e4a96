"""`--streaming`: a local dataset of parquet shards read as an IterableDataset (as a Hub dataset would be), split
across processes by accelerate's own data-loader preparation and across DataLoader workers without duplicates; a
streamed run learns on both precision paths and, stopped after a checkpoint, resumes to end as the uninterrupted
run."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
import torch
from heads_helpers import save_tiny_llama, stop_after_first_checkpoint, train_recording_autocast
from PIL import Image

from hf_frozenlm.data.streaming import load_streaming_image_data
from hf_frozenlm.training.arguments import DataArguments

SHARDS, PER_SHARD, CLASSES = 4, 60, ("dark", "mid", "light")
TINY = ["--image_size", "8", "--patch_size", "2", "--trunk_layers", "2", "--per_device_train_batch_size", "16",
        "--per_device_eval_batch_size", "64", "--eval_strategy", "no", "--disable_tqdm", "true", "--logging_steps", "5"]


@pytest.fixture(autouse=True)
def no_shutdown_sleep(monkeypatch):
    """datasets sleeps 5 s after every pass over a multi-shard stream (its workaround for apache/arrow#45214): nothing
    for an ImageNet epoch, but most of these tests' time. The passes are the same without it."""
    import datasets

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def jpeg(label: int, rng) -> bytes:
    """An 8x8 JPEG whose brightness is its class (learnable in a few steps), with noise that makes each unique."""
    pixels = np.clip(40 + 80 * label + rng.normal(0, 18, (8, 8, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def parquet_dataset(tmp_path_factory):
    """ROOT/data/{train-0000i-of-00004, validation-..., test-...}.parquet with declared Image and ClassLabel
    features."""
    import datasets

    root = tmp_path_factory.mktemp("stream")
    (root / "data").mkdir()
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))})
    rng = np.random.default_rng(0)

    def write(name, count):
        labels = [int(label) for label in rng.integers(0, len(CLASSES), count)]
        rows = {"image": [{"bytes": jpeg(label, rng), "path": None} for label in labels], "label": labels}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(root / "data" / f"{name}.parquet"))

    for shard in range(SHARDS):
        write(f"train-{shard:05d}-of-{SHARDS:05d}", PER_SHARD)
    write("validation-00000-of-00001", 45)
    write("test-00000-of-00001", 45)
    return str(root)


def streamed(root):
    return load_streaming_image_data(DataArguments(dataset=root, streaming=True, shuffle_buffer_size=64), seed=0)


def example_ids(dataset, rank=0, ranks=1, workers=0) -> list[int]:
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=8, num_workers=workers,
                        collate_fn=lambda batch: [int(example["example_id"]) for example in batch])
    if ranks > 1:
        loader = prepare_data_loader(loader, num_processes=ranks, process_index=rank, put_on_device=False,
                                     dispatch_batches=False)
    return [i for batch in loader for i in batch]


def test_a_stream_keeps_its_shards_and_declared_labels(parquet_dataset):
    data = streamed(parquet_dataset)
    train = data.splits["train"]
    assert isinstance(train, __import__("datasets").IterableDataset) and train.num_shards == SHARDS
    assert data.id2label == dict(enumerate(CLASSES))
    assert (len(data.splits["validation"]), len(data.splits["test"])) == (45, 45)
    ids = example_ids(train)
    assert len(ids) == SHARDS * PER_SHARD and len(set(ids)) == len(ids)  # one id per image, stable by content
    example = next(iter(train))
    assert set(example["image"]) == {"bytes", "path"}  # left undecoded: the collator decodes (in the workers)


def test_two_processes_and_their_workers_read_disjoint_shards(parquet_dataset):
    train = streamed(parquet_dataset).splits["train"]
    everything = Counter(example_ids(train))
    ranks = [example_ids(train, rank=rank, ranks=2, workers=2) for rank in range(2)]
    assert not set(ranks[0]) & set(ranks[1])
    assert Counter(ranks[0]) + Counter(ranks[1]) == everything  # nothing lost, nothing read twice
    assert len(ranks[0]) == len(ranks[1]) == SHARDS * PER_SHARD // 2


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("llm") / "tiny-llama", seed=4)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_streamed_run_learns(precision, parquet_dataset, tiny_llm, tmp_path):
    metrics, autocast = train_recording_autocast([
        "--dataset", parquet_dataset, "--streaming", "--max_steps", "30", "--learning_rate", "3e-3", "--llm", tiny_llm,
        "--precision", precision, "--save_strategy", "no", "--output_dir", str(tmp_path / "run"), *TINY])
    assert bool(autocast) and all(autocast) == (precision == "bf16")
    assert metrics["test"]["accuracy"] > 0.8  # three classes by brightness; chance 1/3


def test_a_stopped_streamed_run_resumes_and_ends_as_the_uninterrupted_one(parquet_dataset, tiny_llm, tmp_path,
                                                                          monkeypatch):
    from hf_frozenlm.training import parse_train_arguments, train_task

    def run(folder, *extra):
        torch.set_num_threads(1)
        return train_task(parse_train_arguments([
            "--dataset", parquet_dataset, "--streaming", "--max_steps", "6", "--save_strategy", "steps",
            "--save_steps", "3", "--llm", tiny_llm, "--precision", "fp32", "--aa", "rand-m9-mstd0.5-inc1",
            "--reprob", "0.25", "--augment", "on", "--output_dir", str(folder), *TINY, *extra]))

    whole = run(tmp_path / "whole")
    stop_after_first_checkpoint(monkeypatch, lambda: run(tmp_path / "stopped"))
    resumed = run(tmp_path / "stopped", "--resume_from_checkpoint", "last")
    assert resumed["test"]["loss"] == pytest.approx(whole["test"]["loss"], rel=1e-5)
    from hf_frozenlm import ViTLlamaForImageClassification

    a = ViTLlamaForImageClassification.from_pretrained(tmp_path / "whole").state_dict()
    b = ViTLlamaForImageClassification.from_pretrained(tmp_path / "stopped").state_dict()
    assert all(torch.allclose(a[name], b[name], atol=1e-6) for name in a)
