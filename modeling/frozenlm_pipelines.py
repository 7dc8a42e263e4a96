"""Pipelines for the tasks transformers has none for, shipped inside every saved folder of those tasks.

A folder's config names its pipeline under `custom_pipelines`, so with or without hf_frozenlm installed

    pipeline("point-cloud-classification", model=folder, trust_remote_code=True)(cloud)
    pipeline("motion-forecasting", model=folder, trust_remote_code=True)(scene)
    pipeline("image-text-retrieval", model=folder, trust_remote_code=True)(image, candidate_texts=[...])
    pipeline("visual-question-answering", model=folder, trust_remote_code=True)(image, question="...")
    pipeline("3d-question-answering", model=folder, trust_remote_code=True)({"points": cloud, "question": "..."})

work like transformers' own pipelines (batching, devices). Each pipeline's model is the folder's AutoModel, which
for these tasks is the task model itself (VQA's is AutoModelForVisualQuestionAnswering: its AutoModel is the encoder).

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


class FrozenLMPipeline(Pipeline):
    """What the pipelines below share: each loads only the preprocessor it names (`_load_feature_extractor` or
    `_load_processor`), takes `top_k` at call time and runs the model on the preprocessed batch."""

    _load_processor = False
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, top_k=None, **kwargs):
        return {}, {}, ({"top_k": top_k} if top_k is not None else {})

    def _forward(self, model_inputs):
        return self.model(**model_inputs)


class PointCloudClassificationPipeline(FrozenLMPipeline):
    """A point cloud ((N, 3 [+ F]) array or .npy/.npz/.txt file) -> the top-k labels with probabilities."""

    _load_feature_extractor = True

    def preprocess(self, cloud):
        return self.feature_extractor(_as_array(cloud, "point clouds"), return_tensors="pt")

    def postprocess(self, model_outputs, top_k=5):
        return _top_labels(model_outputs.logits[0], self.model.config.id2label, top_k)


class MotionForecastingPipeline(FrozenLMPipeline):
    """A scene (dict with "agent", "others", "lanes" in city coordinates, metres, 10 Hz; or the path of a JSON file
    holding one) -> the forecast trajectories in city coordinates, most probable first:
    [{"trajectory": (T, 2) list, "probability": p}, ...]; `top_k` keeps the k most probable (default: all K)."""

    _load_feature_extractor = True

    def preprocess(self, scene):
        if isinstance(scene, (str, os.PathLike)):
            try:
                with open(scene, encoding="utf-8") as handle:
                    scene = json.load(handle)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ProcessorInputError(f"Cannot read {os.fspath(scene)} as a scene JSON file ({error}).") from error
        batch = self.feature_extractor(scene, return_tensors="pt")
        batch.pop("labels", None)  # a scene that comes with its future is still only forecast
        return batch

    def _forward(self, model_inputs):
        frame = {"origin": model_inputs.pop("origin"), "rotation": model_inputs.pop("rotation")}
        outputs = self.model(**model_inputs)
        return {"trajectories": outputs.trajectories, "mode_logits": outputs.mode_logits, **frame}

    def postprocess(self, model_outputs, top_k=None):
        city = MotionSceneFeatureExtractor.to_city(
            model_outputs["trajectories"], model_outputs["origin"], model_outputs["rotation"]
        )[0]  # (K, T, 2)
        probabilities = model_outputs["mode_logits"][0].float().softmax(-1)
        order = probabilities.argsort(descending=True)[:top_k]
        return [{"trajectory": city[int(k)].round(3).tolist(), "probability": float(probabilities[k])} for k in order]


class ImageTextRetrievalPipeline(FrozenLMPipeline):
    """An image and candidate texts -> every text with its match probability (the sigmoid of the model's matching
    logit, which is trained with binary cross-entropy on matching / mismatched pairs), best first:
    pipe(image, candidate_texts=["...", ...], top_k=None)."""

    _load_processor = True

    def _sanitize_parameters(self, candidate_texts=None, top_k=None, **kwargs):
        preprocess = {"candidate_texts": candidate_texts} if candidate_texts is not None else {}
        return preprocess, {}, ({"top_k": top_k} if top_k is not None else {})

    def preprocess(self, image, candidate_texts=None):
        from transformers.image_utils import load_image

        texts = [candidate_texts] if isinstance(candidate_texts, str) else list(candidate_texts or [])
        if not texts or not all(isinstance(text, str) and text.strip() for text in texts):
            raise ProcessorInputError("Pass candidate_texts=[...]: the (non-empty) texts to rank against the image.")
        image = load_image(image)
        # One (image, text) pair per candidate: ViLT reads image and text in one stream, so each pair is a forward.
        batch = self.processor(images=[image] * len(texts), text=texts, padding=True, truncation=True,
                               max_length=self.model.config.vilt_config.max_position_embeddings, return_tensors="pt")
        batch["candidate_texts"] = texts
        return batch

    def _forward(self, model_inputs):
        texts = model_inputs.pop("candidate_texts")
        return {"scores": self.model(**model_inputs).logits[:, 0], "candidate_texts": texts}

    def postprocess(self, model_outputs, top_k=None):
        logits = model_outputs["scores"].float()
        order = logits.argsort(descending=True, stable=True)[:top_k]
        return [{"text": model_outputs["candidate_texts"][int(i)], "score": float(logits[i].sigmoid())} for i in order]


class VisualQuestionAnsweringPipeline(FrozenLMPipeline):
    """An image and a question -> the top-k answers with their scores (each answer's sigmoid: the model scores answers
    independently, as ViLT trains them): pipe(image, question="...", top_k=5), or pipe({"image": ..., "question":
    "..."}) and lists of those. transformers 5 removed its own pipeline for this task."""

    _load_processor = True

    def __call__(self, image, question=None, **kwargs):
        if question is not None:
            many = isinstance(image, (list, tuple))
            image = ([{"image": i, "question": question} for i in image] if many
                     else {"image": image, "question": question})
        return super().__call__(image, **kwargs)

    def preprocess(self, inputs):
        from transformers.image_utils import load_image

        if not isinstance(inputs, dict) or "image" not in inputs or not str(inputs.get("question") or "").strip():
            raise ProcessorInputError('Pass an image and question="...", or {"image": ..., "question": "..."}.')
        return self.processor(images=load_image(inputs["image"]), text=inputs["question"], truncation=True,
                              max_length=self.model.config.vilt_config.max_position_embeddings, return_tensors="pt")

    def postprocess(self, model_outputs, top_k=5):
        probabilities = model_outputs.logits[0].float().sigmoid()
        top = probabilities.topk(min(top_k, probabilities.shape[-1]))
        id2label = self.model.config.id2label
        return [{"answer": id2label[int(i)], "score": float(p)} for p, i in zip(top.values, top.indices)]


class QuestionAnswering3DPipeline(FrozenLMPipeline):
    """{"points": scene, "question": str} -> the top-k answers with probabilities.

    The scene: an (N, 3 + F) array (xyz, then the model's F point features, e.g. RGB in [0, 1]), or (N, 3) xyz with
    "colors" (N, F) beside it, or the path of a .npz file with `points` and `colors` arrays (or a .npy / .txt file of
    (N, 3 + F) rows)."""

    _load_processor = True

    @staticmethod
    def scene_array(inputs: dict) -> np.ndarray:
        """The (N, 3 + F) scene of one pipeline input."""
        points, colors = inputs["points"], inputs.get("colors")
        if isinstance(points, (str, os.PathLike)) and os.fspath(points).endswith(".npz") and colors is None:
            with np.load(os.fspath(points), allow_pickle=False) as archive:
                if "points" not in archive.files:
                    raise ProcessorInputError(f"{os.fspath(points)} has no `points` array ({archive.files}).")
                points = archive["points"]
                colors = next((archive[key] for key in ("colors", "colours", "rgb") if key in archive.files), None)
        points = _as_array(points, "scenes")
        if colors is None:
            return points
        colors = _as_array(colors, "scene colours")
        if points.ndim != 2 or colors.ndim != 2 or len(points) != len(colors):
            raise ProcessorInputError(f"points {points.shape} and colors {colors.shape}: pass one colour row per "
                                      "point.")
        return np.concatenate([points[:, :3], colors], axis=1)

    def preprocess(self, inputs):
        if not isinstance(inputs, dict) or "points" not in inputs or "question" not in inputs:
            raise ProcessorInputError('3D question answering takes {"points": scene cloud, "question": text} '
                                      '(and "colors" when the points are xyz only).')
        return self.processor(self.scene_array(inputs), [inputs["question"]], return_tensors="pt")

    def postprocess(self, model_outputs, top_k=5):
        return _top_labels(model_outputs.logits[0], self.model.config.id2label, top_k)
