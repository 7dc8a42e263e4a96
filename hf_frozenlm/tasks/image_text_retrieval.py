"""Image-text retrieval: a ViLT trunk + the frozen LLM block + ViLT's image-text matching head, one score per
(image, text) pair (the paper's retrieval task).

Builtin: shapes-captions, generated scenes of coloured shapes, each with its unique caption (offline). Files:
`flickr30k:KARPATHY_JSON,IMAGE_DIR` (the Karpathy splits). Training pairs each image with one of its captions
(label 1) and with a caption of another image of the batch (label 0); the loss is binary cross-entropy on the
matching logit. Metrics: recall@1/5/10 in both directions, from ranking every image of a split against every text of
it (`score_split`, the first SCORE_MAX_IMAGES images of the split).
"""

from __future__ import annotations

import math

from ..data.images import read_image_files
from ..data.randomness import ExampleRandomness
from ..data.vqa import load_caption_data
from ..errors import DataError, UsageError
from ..modeling import ViltLlamaForImageAndTextRetrieval
from .base import Task, TaskData, TokenGrid
from .visual_question_answering import (
    encode,
    load_vilt_processor,
    make_vilt_processor,
    sample_images,
    text_limit,
    vilt_token_grid,
)

# Ranking is quadratic (every image against every text, one forward per pair): 100 images of one caption each are
# 10,000 pairs, a few seconds for the builtin's model on one CPU thread; Flickr30k's 5 captions per image make 50,000.
SCORE_MAX_IMAGES = 100
SCORE_BATCH_SIZE = 256


class RetrievalCollator:
    """Examples {image, captions} -> 2B (image, text) pairs for the matching head: first each image with one of its
    captions (label 1), then each image with the caption drawn for another image of the batch (label 0).

    Training (`randomness` given) draws each image's caption and its place in the pairing from the example's own
    generator (`ExampleRandomness`, data/randomness.py), so a resumed run pairs as the uninterrupted one. The partners
    form a random cycle, so that every image and every drawn caption appears once as a match and once as a mismatch:
    image-only or text-only features carry no gradient in any batch, only their agreement does. Evaluation takes each
    image's first caption and the next image's, deterministically. A partner whose caption is one of the image's own is
    passed over: it would be a "mismatch" that matches.
    """

    def __init__(self, processor, max_length: int, randomness=None):
        self.processor = processor
        self.max_length = max_length
        self.randomness = ExampleRandomness.of(randomness) if randomness is not None else None

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        if not examples:
            raise DataError("Cannot collate an empty batch of images.")
        if any(not example["captions"] for example in examples):
            raise DataError("An image has no captions; every retrieval example needs at least one.")
        count = len(examples)
        if self.randomness is not None:
            rngs = [self.randomness.rng(example) for example in examples]
            texts = [e["captions"][int(rng.integers(len(e["captions"])))] for e, rng in zip(examples, rngs)]
            # Images in the order of a random key each, closed into a cycle: a uniformly random cyclic pairing.
            order = sorted(range(count), key=[rng.random() for rng in rngs].__getitem__)
        else:
            texts = [example["captions"][0] for example in examples]
            order = list(range(count))  # the next image
        partners = {order[k]: order[(k + 1) % count] for k in range(count)}
        images, labels = [example["image"] for example in examples], [1.0] * count
        for index, example in enumerate(examples):
            own = set(example["captions"])
            # From the partner on around the cycle, the first caption that is not one of the image's own (a batch of
            # one image, or of images sharing all captions, has no mismatch to offer).
            start = order.index(partners[index])
            around = [order[(start + k) % count] for k in range(count)]
            negative = next((texts[j] for j in around if j != index and texts[j] not in own), None)
            if negative is not None:
                images.append(example["image"])
                texts.append(negative)
                labels.append(0.0)
        batch = encode(self.processor, images, texts, self.max_length)
        batch["labels"] = torch.tensor(labels)
        return batch


def pair_scores(model, processor, examples, batch_size: int = SCORE_BATCH_SIZE):
    """(scores (texts, images), owner of each text): the model's matching logit of every (text, image) pair.

    Each image and each text is processed once; the pairs are then assembled from those tensors in batches."""
    import torch

    from ..data.images import to_rgb

    images = [to_rgb(image) for image in examples["image"]]
    texts, owners = [], []
    for index, captions in enumerate(examples["captions"]):
        texts += list(captions)
        owners += [index] * len(captions)
    device = next(model.parameters()).device
    pixels = processor.image_processor(images, return_tensors="pt")
    tokens = processor.tokenizer(texts, padding=True, truncation=True, max_length=text_limit(model),
                                 return_tensors="pt")
    pairs = torch.cartesian_prod(torch.arange(len(texts)), torch.arange(len(images)))  # (texts * images, 2)
    scores = torch.empty(len(pairs))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            text_index, image_index = pairs[start:start + batch_size].unbind(1)
            batch = {name: value[text_index] for name, value in tokens.items()}
            batch.update({name: value[image_index] for name, value in pixels.items()})
            batch = {name: value.to(device) for name, value in batch.items()}
            scores[start:start + len(text_index)] = model(**batch).logits[:, 0].float().cpu()
    model.train(was_training)
    return scores.reshape(len(texts), len(images)).numpy(), owners


class ImageTextRetrievalTask(Task):
    name = "image-text-retrieval"
    position = 6
    model_class = ViltLlamaForImageAndTextRetrieval
    default_trunk = "vilt-b32"
    builtin = "shapes-captions"
    builtin_trunk = "vilt-tiny"  # 48 px scenes in 16 px patches, 512-token vocabulary, 2 layers
    dataset_help = ("shapes-captions (builtin: 1,500 generated scenes, one unique caption each; shapes-captions:N "
                    "for N scenes) or flickr30k:KARPATHY_JSON,IMAGE_DIR")
    input_help = "image files (PNG, JPEG, ...) and --texts T1 T2 ... (ranked against each image, with scores)"
    pipeline_tag = "image-text-retrieval"
    summary = "Scores how well a text matches an image, for image-text retrieval (ViLT with a frozen LLM block)."
    # The mean of the six recalls (i2t and t2i at 1, 5, 10; the literature's RSUM / 6) ranks runs: on a 100-image
    # ranking a single R@1 moves in steps of 0.01 and swings with a handful of images, while the mean weighs both
    # directions and the whole top of the ranking, so it separates recipes more reliably.
    primary_metric = "mean_recall"
    labels_are_classes = False  # match / mismatch targets of one logit: no classes, no label smoothing
    label_smoothing_applies = False
    # Measured on the builtin with SmolLM2-135M's last layer (10 epochs, 330 steps): test mean_recall 0.285 (R@10 0.51 /
    # 0.49, match_accuracy 0.88) under bf16 autocast and 0.412 (R@10 0.65 / 0.78, 0.91) in fp32 with oneDNN and MKL
    # held to AVX2; a random ranking scores 0.053 (R@10 0.10). The loss leaves ln 2 within ~30 steps on both paths.
    training_defaults = dict(label_smoothing_factor=0.0, num_train_epochs=10, per_device_train_batch_size=32,
                             learning_rate=1e-3)

    # -- data and model -------------------------------------------------------------------------------------
    def load_data(self, data_args) -> TaskData:
        return load_caption_data(data_args, self.builtin)

    def make_processor(self, model, data, model_args=None):
        return make_vilt_processor(self, model, data, model_args,
                                   lambda: [c for captions in data.splits["train"]["captions"] for c in captions])

    def load_processor(self, folder: str):
        return load_vilt_processor(folder)

    def collators(self, model, processor, randomness=0, data: TaskData | None = None):
        limit = text_limit(model)
        return RetrievalCollator(processor, limit, randomness), RetrievalCollator(processor, limit)

    # -- metrics --------------------------------------------------------------------------------------------
    def compute_metrics(self, model, data: TaskData | None = None):
        # Trainer keeps one prediction per dataset row, while the collator makes two pairs of each image: batch
        # metrics would be cut short. Everything is measured by score_split on the whole image x text matrix.
        return None

    def score_split(self, model, processor, split) -> dict[str, float]:
        """Recall@1/5/10 both ways (and their mean), ranking the split's first SCORE_MAX_IMAGES images against all of
        their texts; match_accuracy: how often the logit's sign is right, averaged over matching and mismatched pairs
        (balanced: there are many more mismatched pairs)."""
        import numpy as np

        from ..metrics import load_metric

        examples = split.select(range(min(len(split), SCORE_MAX_IMAGES)))
        if len(examples) < 2:
            return {}  # ranking needs at least two images
        scores, owners = pair_scores(model, processor, examples)
        metrics = load_metric("retrieval_recall").compute(predictions=scores.tolist(), references=owners)
        matching = np.asarray(owners)[:, None] == np.arange(scores.shape[1])[None, :]
        metrics["match_accuracy"] = float(((scores[matching] > 0).mean() + (scores[~matching] <= 0).mean()) / 2)
        return metrics

    def baseline(self, data: TaskData) -> tuple[str, dict[str, float]]:
        """A random ranking of the images score_split ranks (the test split's first SCORE_MAX_IMAGES): its expected
        recalls, exactly, and a coin toss for matching."""
        test = data.splits["test"]
        scored = test.select(range(min(len(test), SCORE_MAX_IMAGES)))
        caption_counts = [len(captions) for captions in scored["captions"]]
        images, texts = len(caption_counts), sum(caption_counts)
        metrics = {}
        for k in (1, 5, 10):
            # An image is found when any of its m texts is among k drawn from all texts; a text when its image is
            # among k drawn from the images.
            metrics[f"i2t_R@{k}"] = sum(1 - math.comb(texts - m, k) / math.comb(texts, k) if k < texts else 1.0
                                        for m in caption_counts) / images
            metrics[f"t2i_R@{k}"] = min(k, images) / images
        metrics["mean_recall"] = sum(metrics.values()) / len(metrics)
        metrics["match_accuracy"] = 0.5
        return "random ranking", metrics

    # -- predict --------------------------------------------------------------------------------------------
    def add_predict_arguments(self, parser) -> None:
        parser.add_argument("--texts", nargs="+", required=True, metavar="TEXT",
                            help="the candidate texts, ranked against each image")

    def check_predict_options(self, options) -> None:
        if not all(text.strip() for text in options.texts):
            raise UsageError("--texts holds an empty text: pass the candidate texts to rank, each non-empty.")

    def read_inputs(self, paths: list[str], options) -> list:
        return read_image_files(paths)

    def predict(self, model, processor, inputs: list, options) -> list[dict]:
        import torch

        texts = list(options.texts)
        results = []
        for path, image in zip(options.inputs, inputs):
            batch = encode(processor, [image] * len(texts), texts, text_limit(model))
            with torch.no_grad():
                logits = model(**batch).logits[:, 0].float()
            order = logits.argsort(descending=True, stable=True)
            # The match probability: the head is trained with binary cross-entropy on matching / mismatched pairs.
            results.append({"input": path, "predictions": [
                {"text": texts[int(i)], "score": round(float(logits[i].sigmoid()), 6)} for i in order]})
        return results

    def format_prediction(self, result: dict) -> str:
        lines = [str(result["input"])]
        for rank, prediction in enumerate(result["predictions"], 1):
            lines.append(f"  {rank}. {prediction['score']:.4f}  {prediction['text']}")
        return "\n".join(lines)

    def write_examples(self, data: TaskData, folder: str, count: int = 2) -> tuple[list[str], list[str]]:
        """`count` test images, and as texts the first caption of those and of a few more test images (distractors)."""
        split = data.splits["test"]
        count = min(count, len(split))
        texts = [captions[0] for captions in split.select(range(min(len(split), max(count + 2, 4))))["captions"]]
        return sample_images(data, folder, list(range(count))), ["--texts", *texts]

    # -- publishing -----------------------------------------------------------------------------------------
    def usage_snippet(self, repo_id: str, config) -> str:
        size = config.vilt_config.image_size
        return f'''```python
import torch
from PIL import Image, ImageDraw
from transformers import AutoModel, AutoProcessor, pipeline

image = Image.new("RGB", ({size}, {size}), "gray")  # or Image.open("your_image.png")
ImageDraw.Draw(image).ellipse(({size} // 4, {size} // 4, 3 * {size} // 4, 3 * {size} // 4), fill="red")
texts = ["a red circle", "a blue square", "a green triangle and a yellow circle"]

retrieval = pipeline("image-text-retrieval", model="{repo_id}", trust_remote_code=True)
print(retrieval(image, candidate_texts=texts))  # every text with its match probability, best first

# The same with the model: one matching logit per (image, text) pair
processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True).eval()
inputs = processor(images=[image] * len(texts), text=texts, padding=True, truncation=True, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits[:, 0]
print(texts[logits.argmax().item()], logits.sigmoid().tolist())
```'''

    # -- analysis -------------------------------------------------------------------------------------------
    def token_grid(self, model, inputs: dict) -> TokenGrid:
        return vilt_token_grid(model, inputs)


TASK = ImageTextRetrievalTask()
