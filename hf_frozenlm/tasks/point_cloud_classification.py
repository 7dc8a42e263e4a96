"""Point-cloud classification: a Point-BERT trunk + the frozen LLM block + Point-BERT's head over [CLS, max over
groups] (the paper's ModelNet40 / ScanObjectNN experiments).

Builtin: `shapes3d`, six generated shapes (sphere, cube, cylinder, cone, torus, pyramid) rotated about the vertical
axis, with a tiny trunk (16 groups of 16 of 256 points). Files: `pointfolder:PATH` (.npy/.npz/.ply/.off/.txt/.xyz in
class folders, split folders or ModelNet40's layout) or `h5:PATH` (ModelNet40 / ScanObjectNN HDF5). The processor is
a `PointCloudFeatureExtractor` (unit-sphere normalisation and a fixed subset of `num_points` per cloud). Metrics:
accuracy (and top-5 with more than 5 classes).
"""

from __future__ import annotations

import os

import numpy as np

from ..data.points import CLUTTERED, DATASET_HELP, POINT_EXTENSIONS, load_point_cloud_data, read_point_cloud
from ..data.randomness import ExampleRandomness
from ..errors import DataError
from ..modeling import PointBertLlamaForPointCloudClassification, PointCloudFeatureExtractor
from .base import ClassificationTask, TaskData, TokenGrid

# Point-BERT's scale-and-translate augmentation (PointcloudScaleAndTranslate): per-axis scale, then a shift.
AUGMENT_SCALE = (2 / 3, 3 / 2)
AUGMENT_TRANSLATE = 0.2


class PointCloudCollator:
    """Examples with `points` ((N, 3) arrays, N may vary) and `label` -> `point_values` (B, num_points, 3) and
    `labels`, through the model's feature extractor.

    train=True draws a fresh subset of every cloud for each epoch and applies Point-BERT's scale-and-translate
    augmentation, from each example's own generator (`randomness`, see data/randomness.py); otherwise the feature
    extractor's fixed subset per cloud, so metrics are reproducible.
    """

    def __init__(self, feature_extractor: PointCloudFeatureExtractor, train: bool = False, randomness=None):
        self.feature_extractor = feature_extractor
        self.train = train
        self.randomness = ExampleRandomness.of(randomness)

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        if not examples:
            raise DataError("Cannot collate an empty batch of point clouds.")
        clouds = [np.asarray(example["points"]) for example in examples]
        rngs = [self.randomness.rng(example) for example in examples] if self.train else None
        batch = self.feature_extractor(clouds, return_tensors="np", rng=rngs)
        point_values = batch["point_values"]  # (B, P, 3), each cloud in the unit sphere
        if self.train:
            scale = np.stack([rng.uniform(*AUGMENT_SCALE, size=(1, 3)) for rng in rngs])
            shift = np.stack([rng.uniform(-AUGMENT_TRANSLATE, AUGMENT_TRANSLATE, size=(1, 3)) for rng in rngs])
            point_values = point_values * scale + shift
        out = {"point_values": torch.from_numpy(np.ascontiguousarray(point_values, dtype=np.float32))}
        if "point_features" in batch:
            out["point_features"] = torch.from_numpy(np.ascontiguousarray(batch["point_features"], dtype=np.float32))
        if "label" in examples[0]:
            out["labels"] = torch.tensor([int(example["label"]) for example in examples])
        return out


class PointCloudClassificationTask(ClassificationTask):
    name = "point-cloud-classification"
    position = 3
    model_class = PointBertLlamaForPointCloudClassification
    default_trunk = "pointbert-small"
    builtin = "shapes3d"
    builtin_trunk = "pointbert-tiny"
    builtin_trunk_kwargs = {}
    dataset_help = DATASET_HELP
    input_help = (f"point-cloud files ({', '.join(POINT_EXTENSIONS)}; xyz first, further columns ignored; .off meshes "
                  "are sampled on their surface)")
    pipeline_tag = "point-cloud-classification"
    summary = "Classifies point clouds (a Point-BERT trunk with a frozen LLM block)."
    primary_metric = "accuracy"
    # 30 epochs of 420 clouds in batches of 32 (420 steps) with SmolLM2's last layer: test accuracy 0.967 with fp32
    # and with bf16 autocast (chance 0.167), 3 minutes on one CPU thread.
    training_defaults = dict(num_train_epochs=30, per_device_train_batch_size=32, learning_rate=1e-3,
                             label_smoothing_factor=0.0)

    def load_data(self, data_args) -> TaskData:
        return load_point_cloud_data(data_args)

    def is_builtin_name(self, dataset: str) -> bool:
        # The cluttered builtin is the same clouds with scattered points: the builtin's trunk preset suits it too.
        return dataset.split(":", 1)[0] in (self.builtin, CLUTTERED)

    # -- processing -----------------------------------------------------------------------------------------
    def make_processor(self, model, data: TaskData, model_args=None):
        source = getattr(model_args, "trunk", None)
        if source is not None and os.path.isfile(os.path.join(str(source), "preprocessor_config.json")):
            return PointCloudFeatureExtractor.from_pretrained(source)  # fine-tuning a saved model: its own sampling
        return PointCloudFeatureExtractor(num_points=data.info.get("num_points", 1024),
                                          point_feature_size=model.config.point_feature_size)

    def load_processor(self, folder: str):
        return PointCloudFeatureExtractor.from_pretrained(folder)

    def collators(self, model, processor, randomness=0, data: TaskData | None = None):
        return PointCloudCollator(processor, train=True, randomness=randomness), PointCloudCollator(processor)

    # -- predict --------------------------------------------------------------------------------------------
    def read_inputs(self, paths: list[str], options) -> list:
        return [read_point_cloud(self.require_file(path)) for path in paths]

    def predict(self, model, processor, inputs: list, options) -> list[dict]:
        import torch

        batch = processor(inputs, return_tensors="pt")
        with torch.no_grad():
            logits = model(**batch).logits
        top = self.top_labels(logits, model.config.id2label, options.top_k)
        return [{"input": path, "predictions": predictions} for path, predictions in zip(options.inputs, top)]

    def write_example(self, example: dict, stem: str) -> str:
        np.save(stem + ".npy", np.asarray(example["points"], dtype=np.float32))
        return stem + ".npy"

    # -- publishing -----------------------------------------------------------------------------------------
    def usage_snippet(self, repo_id: str, config) -> str:
        return f'''```python
import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModel, pipeline

classifier = pipeline("point-cloud-classification", model="{repo_id}", trust_remote_code=True)
cloud = np.random.default_rng(0).normal(size=(2048, 3)).astype("float32")  # or np.load("cloud.npy"): (points, 3) xyz
print(classifier(cloud, top_k=3))

feature_extractor = AutoFeatureExtractor.from_pretrained("{repo_id}", trust_remote_code=True)
model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True).eval()  # the classifier itself
inputs = feature_extractor(cloud, return_tensors="pt")  # centred, scaled, resampled to a fixed number of points
with torch.no_grad():
    logits = model(**inputs).logits
print(model.config.id2label[logits.argmax(-1).item()])

# The encoder alone (Point-BERT trunk + frozen LLM block), e.g. for features:
with torch.no_grad():
    features = model.pointbert_llama(**inputs).last_hidden_state  # (batch, 1 + groups, width)
print(features.shape)
```'''

    # -- analysis -------------------------------------------------------------------------------------------
    def token_grid(self, model, inputs: dict) -> TokenGrid:
        return point_group_grid(model, inputs)


def point_group_grid(model, inputs: dict) -> TokenGrid:
    """A Point-BERT model's tokens as a set: the point groups after the CLS token, positioned at their centers (the same
    farthest-point samples the model groups around). Point-BERT's attention runs on sdpa and returns no weights, so
    there is no trunk CLS-attention map (`trunk_attention` None); the LLM block's maps are available."""
    from ..analysis.frozenlm_maps import token_layout  # the Space's copy of the layout: one definition

    base = model.base_model
    layout = token_layout(base, inputs)
    return TokenGrid(block=base.frozen_lm, trunk_attention=None, num_prefix_tokens=layout.num_prefix_tokens,
                     grid_shape=layout.grid_shape, positions=layout.positions)


TASK = PointCloudClassificationTask()
