"""Visual question answering: a ViLT trunk (question tokens and image patches in one stream) + the frozen LLM block +
ViLT's VQA head over the answer vocabulary (the paper's 2D VQA task).

Builtin: shapes-vqa, generated scenes of coloured shapes with colour / count / existence / position questions
(offline). Files: `vqav2:QUESTIONS_JSON,ANNOTATIONS_JSON,IMAGE_DIR` (one VQAv2 split; validation and test are carved
from it by image). Labels are soft answer scores (VQAv2: min(1, humans who gave the answer / 3)) and the loss is ViLT's
binary cross-entropy over answers, so label smoothing does not apply. Metric: VQA soft accuracy.

The ViLT helpers below (processor, image reading, token grid) serve image-text retrieval too.
"""

from __future__ import annotations

import os
from collections import Counter

from ..data.images import read_image_files, to_rgb
from ..data.vqa import answer_targets, load_vqa_data
from ..errors import DataError, RunFolderError, UsageError
from ..modeling import ViltLlamaForQuestionAnswering
from .base import Task, TaskData, TokenGrid


# -- ViLT helpers shared with image-text retrieval --------------------------------------------------------------
def text_limit(model) -> int:
    """The most text tokens the model takes (ViLT's text position embeddings)."""
    return int(model.config.vilt_config.max_position_embeddings)


def make_vilt_processor(task: Task, model, data: TaskData, model_args, texts):
    """The processor saved beside a ViLT model.

    - a saved hf_frozenlm model (or a pretrained ViLT checkpoint) given as --trunk brings its own processor: its
      tokenizer is the one its text embeddings were trained with;
    - otherwise a WordPiece tokenizer is trained offline (the builtins: on every template they produce; files: on the
      training split's texts, `texts()`), with the PIL ViLT image processor at the trunk's image and patch size.
    """
    from transformers import ViltProcessor

    from ..data.text import train_wordpiece_tokenizer
    from ..data.vqa import builtin_vilt_processor, vilt_processor

    config = model.config.vilt_config
    trunk = getattr(model_args, "trunk", None)
    if isinstance(trunk, str) and trunk not in model.trunk_presets:
        try:
            processor = ViltProcessor.from_pretrained(trunk)
        except (OSError, ValueError, TypeError) as error:
            raise UsageError(f"--trunk {trunk}: it has no ViLT processor (tokenizer + image processor) to read "
                             f"({error}); its text embeddings need the tokenizer they were trained with.") from error
    elif task.is_builtin_name(data.name):
        processor = builtin_vilt_processor(config.image_size, config.patch_size, config.vocab_size,
                                           config.max_position_embeddings)
    else:
        tokenizer = train_wordpiece_tokenizer(texts(), config.vocab_size, config.max_position_embeddings)
        processor = vilt_processor(tokenizer, config.image_size, config.patch_size)
    if len(processor.tokenizer) > config.vocab_size:
        raise UsageError(f"The tokenizer has {len(processor.tokenizer)} tokens but the trunk's vocabulary holds "
                         f"{config.vocab_size}; pass a trunk with a larger vocab_size (--trunk_kwargs "
                         f"'{{\"vocab_size\": {len(processor.tokenizer)}}}').")
    return processor


def load_vilt_processor(folder: str):
    from transformers import ViltProcessor

    if not os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
        raise RunFolderError(f"{folder} has no saved ViLT processor (tokenizer_config.json and processor_config.json, "
                             "written by `train`): a ViLT model needs the tokenizer its text embeddings were trained "
                             "with.")
    return ViltProcessor.from_pretrained(folder)


def encode(processor, images, texts, max_length: int) -> dict:
    """Images (PIL) and texts -> ViLT inputs: input_ids / attention_mask / token_type_ids padded to the longest text
    (truncated at the model's limit), pixel_values / pixel_mask padded to the largest image."""
    return dict(processor(images=[to_rgb(image) for image in images], text=list(texts), padding=True,
                          truncation=True, max_length=max_length, return_tensors="pt"))


def vilt_token_grid(model, inputs: dict) -> TokenGrid:
    """ViLT's stream is the text tokens, then the image's [CLS], then its patches row by row: the grid is the patches,
    after len(text) + 1 prefix tokens. Only for unpadded images (one size per batch, as the builtins): a padded image's
    patches would not tile it."""
    base = model.base_model
    pixel_values, input_ids = inputs.get("pixel_values"), inputs.get("input_ids")
    if pixel_values is None or input_ids is None:
        raise UsageError("The ViLT token grid needs the model inputs pixel_values and input_ids.")
    pixel_mask = inputs.get("pixel_mask")
    if pixel_mask is not None and not bool(pixel_mask.bool().all()):
        raise UsageError("The images of this batch are padded to a common size (pixel_mask has zeros), so their "
                         "patches do not tile each image: analyse images of one size.")
    from ..analysis.frozenlm_maps import token_layout  # the Space's copy of the layout: one definition

    layout = token_layout(base, inputs)
    # ViLT's attention returns its weights only when a forward asks for them, so the trunk attention map is not offered.
    return TokenGrid(block=base.frozen_lm, trunk_attention=None, num_prefix_tokens=layout.num_prefix_tokens,
                     grid_shape=layout.grid_shape)


def sample_images(data: TaskData, folder: str, indices: list[int]) -> list[str]:
    """Test images at `indices` written as PNG files; their paths."""
    os.makedirs(folder, exist_ok=True)
    split = data.splits["test"]
    paths = []
    for index in indices:
        path = os.path.join(folder, f"example_{index}.png")
        to_rgb(split[index]["image"]).save(path)
        paths.append(path)
    return paths


# -- the task ------------------------------------------------------------------------------------------------
class VQACollator:
    """Examples {image, question, answers} -> ViLT inputs + `labels`, the soft scores (VQAv2) of each question's answers
    over the model's answer vocabulary. Answers outside it contribute nothing (VQAv2 practice: the vocabulary keeps the
    3,129 most frequent answers). Deterministic: VQA batches need no randomness."""

    def __init__(self, processor, label2id: dict[str, int], max_length: int):
        self.processor = processor
        self.label2id = label2id
        self.max_length = max_length

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        if not examples:
            raise DataError("Cannot collate an empty batch of questions.")
        batch = encode(self.processor, [e["image"] for e in examples], [e["question"] for e in examples],
                       self.max_length)
        if "answers" in examples[0]:
            batch["labels"] = torch.stack([answer_targets(e["answers"], self.label2id, strict=False) for e in examples])
        return batch


class VisualQuestionAnsweringTask(Task):
    name = "visual-question-answering"
    position = 5
    model_class = ViltLlamaForQuestionAnswering
    default_trunk = "vilt-b32"
    builtin = "shapes-vqa"
    builtin_trunk = "vilt-tiny"  # 48 px scenes in 16 px patches, 512-token vocabulary, 2 layers
    dataset_help = ("shapes-vqa (builtin: 1,500 generated scenes, ~3.5 questions each; shapes-vqa:N for N scenes) or "
                    "vqav2:QUESTIONS_JSON,ANNOTATIONS_JSON,IMAGE_DIR")
    input_help = "image files (PNG, JPEG, ...) and --question TEXT (asked about each image); prints the top-k answers"
    pipeline_tag = "visual-question-answering"
    summary = "Answers questions about images (ViLT with a frozen LLM block)."
    primary_metric = "soft_accuracy"
    # The answers are classes (a fine-tuned model's answer head is reset for a new vocabulary), but the labels are
    # soft scores and the loss is binary cross-entropy: Trainer's label smoothing does not apply.
    label_smoothing_applies = False
    # Measured on the builtin with SmolLM2-135M's last layer (10 epochs, 1,150 steps): test soft accuracy 0.700 under
    # bf16 autocast (107 s) and 0.700 in fp32 with oneDNN and MKL held to AVX2 (188 s); the majority answer: 0.240.
    training_defaults = dict(label_smoothing_factor=0.0, num_train_epochs=10, per_device_train_batch_size=32,
                             learning_rate=1e-3)

    # -- data and model -------------------------------------------------------------------------------------
    def load_data(self, data_args) -> TaskData:
        return load_vqa_data(data_args, self.builtin)

    def make_processor(self, model, data, model_args=None):
        return make_vilt_processor(self, model, data, model_args, lambda: data.splits["train"]["question"])

    def load_processor(self, folder: str):
        return load_vilt_processor(folder)

    def collators(self, model, processor, randomness=0, data: TaskData | None = None):
        label2id = {str(answer): int(index) for answer, index in model.config.label2id.items()}
        collator = VQACollator(processor, label2id, text_limit(model))
        return collator, collator

    # -- metrics --------------------------------------------------------------------------------------------
    def preprocess_logits_for_metrics(self):
        # Only the predicted answer is needed: Trainer then keeps (N,) ids instead of (N, answers) logits.
        return lambda logits, labels: (logits[0] if isinstance(logits, tuple) else logits).argmax(-1)

    def compute_metrics(self, model, data: TaskData | None = None):
        import numpy as np

        from ..metrics import load_metric

        metric = load_metric("vqa_soft_accuracy")

        def compute(eval_prediction) -> dict[str, float]:
            predictions = np.asarray(eval_prediction.predictions).reshape(-1)
            scores = np.asarray(eval_prediction.label_ids)
            # Each question's answers and their soft scores (at most ten), not the dense (N, vocabulary) rows.
            references = [{"answer_ids": np.flatnonzero(row).tolist(), "scores": row[row > 0].tolist()}
                          for row in scores]
            return metric.compute(predictions=predictions.tolist(), references=references)

        return compute

    def prepare_for_evaluation(self, model, data: TaskData) -> TaskData:
        """A dataset whose answers the model has never heard of cannot be scored: refuse it instead of reporting 0."""
        known = set(map(str, model.config.label2id))
        answers = {answer for split in data.splits.values() for row in split["answers"] for answer in row}
        if answers and not answers & known:
            raise DataError(f"None of the dataset's answers ({sorted(answers)[:8]} ...) is in the model's answer "
                            f"vocabulary ({sorted(known)[:8]} ...): the model was trained for another dataset.")
        return data

    def baseline(self, data: TaskData) -> tuple[str, dict[str, float]]:
        return "majority answer", {self.primary_metric: self.majority_answer_score(data, "test")}

    def majority_answer_score(self, data: TaskData, split: str) -> float:
        """Soft accuracy on `split` of always giving the training split's most frequent answer."""
        from ..data.vqa import vqa_answer_scores

        counts = Counter(answer for row in data.splits["train"]["answers"] for answer in set(row))
        majority = counts.most_common(1)[0][0]
        rows = data.splits[split]["answers"]
        return sum(vqa_answer_scores(row).get(majority, 0.0) for row in rows) / max(len(rows), 1)

    # -- predict --------------------------------------------------------------------------------------------
    def add_predict_arguments(self, parser) -> None:
        super().add_predict_arguments(parser)
        parser.add_argument("--question", required=True, help="the question asked about every image")

    def check_predict_options(self, options) -> None:
        super().check_predict_options(options)
        if not options.question.strip():
            raise UsageError("--question is empty: pass the question to ask about the images.")

    def read_inputs(self, paths: list[str], options) -> list:
        return read_image_files(paths)

    def predict(self, model, processor, inputs: list, options) -> list[dict]:
        import torch

        batch = encode(processor, inputs, [options.question] * len(inputs), text_limit(model))
        with torch.no_grad():
            # Each answer's sigmoid: the model scores answers independently (binary cross-entropy), as ViLT does.
            probabilities = model(**batch).logits.float().sigmoid()
        top = probabilities.topk(min(options.top_k, probabilities.shape[-1]), dim=-1)
        id2label = model.config.id2label
        return [{"input": path, "question": options.question,
                 "predictions": [{"label": id2label[int(i)], "score": round(float(s), 6)} for s, i in zip(values, ids)]}
                for path, values, ids in zip(options.inputs, top.values, top.indices)]

    def format_prediction(self, result: dict) -> str:
        lines = [f"{result['input']}  Q: {result['question']}"]
        for rank, prediction in enumerate(result["predictions"], 1):
            lines.append(f"  {rank}. {prediction['label']:<24} {prediction['score']:.4f}")
        return "\n".join(lines)

    def write_examples(self, data: TaskData, folder: str, count: int = 2) -> tuple[list[str], list[str]]:
        """Test images that share one question (the most frequent of the first few hundred), and that question."""
        split = data.splits["test"]
        questions = split.select(range(min(len(split), 500)))["question"]
        question = Counter(questions).most_common(1)[0][0]
        indices = [i for i, q in enumerate(questions) if q == question][:count]
        return sample_images(data, folder, indices), ["--question", question]

    # -- publishing -----------------------------------------------------------------------------------------
    def usage_snippet(self, repo_id: str, config) -> str:
        size = config.vilt_config.image_size
        return f'''```python
import torch
from PIL import Image, ImageDraw
from transformers import AutoModel, AutoModelForVisualQuestionAnswering, AutoProcessor, pipeline

image = Image.new("RGB", ({size}, {size}), "gray")  # or Image.open("your_image.png")
ImageDraw.Draw(image).ellipse(({size} // 4, {size} // 4, 3 * {size} // 4, 3 * {size} // 4), fill="red")
question = "what color is the circle?"

vqa = pipeline("visual-question-answering", model="{repo_id}", trust_remote_code=True)
print(vqa(image, question=question, top_k=3))

processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
model = AutoModelForVisualQuestionAnswering.from_pretrained("{repo_id}", trust_remote_code=True).eval()
inputs = processor(images=image, text=question, truncation=True, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits
print(model.config.id2label[logits.argmax(-1).item()])

# The encoder alone (ViLT trunk + frozen LLM block): text tokens, then the image's tokens
encoder = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True).eval()
with torch.no_grad():
    features = encoder(**inputs).last_hidden_state  # (batch, text tokens + 1 + patches, width)
print(features.shape)
```'''

    # -- analysis -------------------------------------------------------------------------------------------
    def token_grid(self, model, inputs: dict) -> TokenGrid:
        return vilt_token_grid(model, inputs)


TASK = VisualQuestionAnsweringTask()
