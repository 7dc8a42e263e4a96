"""Pipelines for the tasks transformers has none for, shipped inside every saved folder of those tasks.

A folder's config names its pipeline under `custom_pipelines`, so with or without hf_frozenlm installed

    pipeline("point-cloud-classification", model=folder, trust_remote_code=True)(cloud)
    pipeline("motion-forecasting", model=folder, trust_remote_code=True)(scene)
    pipeline("image-text-retrieval", model=folder, trust_remote_code=True)(image, candidate_texts=[...])
    pipeline("3d-question-answering", model=folder, trust_remote_code=True)({"points": cloud, "question": "..."})

work like transformers' own pipelines (batching, devices). Each pipeline's model is the folder's AutoModel, which
for these tasks is the task model itself.

Hub-portable: imports only numpy, torch, transformers and sibling modules.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from transformers import Pipeline

from .frozenlm_processing import MotionSceneFeatureExtractor, ProcessorInputError


def _as_array(value, what: str) -> np.ndarray:
    """An array-like, or the path of a .npy / .npz / .txt file holding one."""
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False)
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as archive:
                return archive[archive.files[0]]
        if path.endswith((".txt", ".xyz", ".csv")):
            return np.loadtxt(path, delimiter="," if path.endswith(".csv") else None, ndmin=2)
        raise ProcessorInputError(f"{path}: the pipeline reads {what} from .npy, .npz or .txt files, or takes arrays.")
    return np.asarray(value.detach().cpu() if torch.is_tensor(value) else value, dtype=np.float32)


def _top_labels(logits: torch.Tensor, id2label: dict, top_k: int) -> list[dict]:
    probabilities = logits.float().softmax(-1)
    top = probabilities.topk(min(top_k, probabilities.shape[-1]))
    return [{"label": id2label[int(i)], "score": float(p)} for p, i in zip(top.values, top.indices)]


class PointCloudClassificationPipeline(Pipeline):
    """A point cloud ((N, 3 [+ F]) array or .npy/.npz/.txt file) -> the top-k labels with probabilities."""

    _load_feature_extractor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_processor = False

    def _sanitize_parameters(self, top_k=None, **kwargs):
        return {}, {}, ({"top_k": top_k} if top_k is not None else {})

    def preprocess(self, cloud):
        return self.feature_extractor(_as_array(cloud, "point clouds"), return_tensors="pt")

    def _forward(self, model_inputs):
        return self.model(**model_inputs)

    def postprocess(self, model_outputs, top_k=5):
        return _top_labels(model_outputs.logits[0], self.model.config.id2label, top_k)


class MotionForecastingPipeline(Pipeline):
    """A scene (dict with "agent", "others", "lanes" in city coordinates, or a JSON file of one) -> the K forecast
    trajectories in city coordinates, most probable first: [{"trajectory": (T, 2) list, "probability": p}, ...]."""

    _load_feature_extractor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_processor = False

    def _sanitize_parameters(self, **kwargs):
        return {}, {}, {}

    def preprocess(self, scene):
        if isinstance(scene, (str, os.PathLike)):
            with open(scene, encoding="utf-8") as handle:
                scene = json.load(handle)
        batch = self.feature_extractor(scene, return_tensors="pt")
        batch.pop("labels", None)  # a scene that comes with its future is still only forecast
        return batch

    def _forward(self, model_inputs):
        frame = {"origin": model_inputs.pop("origin"), "rotation": model_inputs.pop("rotation")}
        outputs = self.model(**model_inputs)
        return {"trajectories": outputs.trajectories, "mode_logits": outputs.mode_logits, **frame}

    def postprocess(self, model_outputs):
        city = MotionSceneFeatureExtractor.to_city(
            model_outputs["trajectories"].float().cpu(), model_outputs["origin"].cpu(), model_outputs["rotation"].cpu()
        )[0]  # (K, T, 2)
        probabilities = model_outputs["mode_logits"][0].float().softmax(-1)
        order = probabilities.argsort(descending=True)
        return [{"trajectory": city[int(k)].round(3).tolist(), "probability": float(probabilities[k])} for k in order]


class ImageTextRetrievalPipeline(Pipeline):
    """An image and candidate texts -> every text with its matching score, best first."""

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, candidate_texts=None, **kwargs):
        return ({"candidate_texts": candidate_texts} if candidate_texts is not None else {}), {}, {}

    def preprocess(self, image, candidate_texts=None):
        from transformers.image_utils import load_image

        if not candidate_texts:
            raise ProcessorInputError("Pass candidate_texts=[...]: the texts to rank against the image.")
        image = load_image(image)
        texts = list(candidate_texts)
        batch = self.processor(images=[image] * len(texts), text=texts, padding=True, return_tensors="pt")
        batch["candidate_texts"] = texts
        return batch

    def _forward(self, model_inputs):
        texts = model_inputs.pop("candidate_texts")
        return {"scores": self.model(**model_inputs).logits[:, 0], "candidate_texts": texts}

    def postprocess(self, model_outputs):
        scores = model_outputs["scores"].float()
        order = scores.argsort(descending=True)
        return [{"text": model_outputs["candidate_texts"][int(i)], "score": float(scores[i])} for i in order]


class QuestionAnswering3DPipeline(Pipeline):
    """{"points": (N, 3 + F) scene, "question": str} -> the top-k answers with probabilities."""

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, top_k=None, **kwargs):
        return {}, {}, ({"top_k": top_k} if top_k is not None else {})

    def preprocess(self, inputs):
        if not isinstance(inputs, dict) or "points" not in inputs or "question" not in inputs:
            raise ProcessorInputError('3D question answering takes {"points": scene cloud, "question": text}.')
        return self.processor(_as_array(inputs["points"], "scenes"), [inputs["question"]], return_tensors="pt")

    def _forward(self, model_inputs):
        return self.model(**model_inputs)

    def postprocess(self, model_outputs, top_k=5):
        return _top_labels(model_outputs.logits[0], self.model.config.id2label, top_k)
