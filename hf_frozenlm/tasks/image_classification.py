"""Image classification: a ViT trunk + the frozen LLM block + a linear head on the CLS token (the paper's main task).

Builtin: scikit-learn's real 8x8 handwritten digits (offline), drawn dark ink on white. Files: `imagefolder:PATH`
(class sub-folders or a metadata file) or a Hub dataset name. Metrics: accuracy and top-5 accuracy.
"""

from __future__ import annotations

import os

from ..data.images import (
    RandomResizedCropFlip,
    load_image_classification_data,
    read_image_files,
    to_rgb,
    use_augmentation,
)
from ..data.randomness import ExampleRandomness
from ..errors import DataError
from ..modeling import ViTLlamaForImageClassification
from .base import ClassificationTask, TaskData, TokenGrid


def image_processor_for(config, source: str | None = None):
    """The processor saved beside the model: resize to the trunk's image size, scale to [0, 1], normalise to [-1, 1].

    transformers' ViTImageProcessor needs torchvision; its PIL twin does the same without it. `source`: a pretrained
    trunk or model folder whose own preprocessor_config.json (mean / std) wins when present.
    """
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    size = config.vision_config.image_size
    if source is not None and os.path.isfile(os.path.join(str(source), "preprocessor_config.json")):
        processor = ViTImageProcessorPil.from_pretrained(source)
        processor.size = {"height": size, "width": size}
        return processor
    return ViTImageProcessorPil(size={"height": size, "width": size})


class ImageCollator:
    """Examples with `image` (PIL) and `label` -> `pixel_values` and `labels`, through the model's image processor;
    `augment` (training only) crops and flips first, each example with its own generator."""

    def __init__(self, processor, augment: RandomResizedCropFlip | None = None, randomness=None):
        self.processor = processor
        self.augment = augment
        self.randomness = randomness

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        if not examples:
            raise DataError("Cannot collate an empty batch of images.")
        images = [to_rgb(example["image"]) for example in examples]
        if self.augment is not None:
            images = [self.augment(image, self.randomness.rng(example)) for image, example in zip(images, examples)]
        batch = {"pixel_values": self.processor(images, return_tensors="pt")["pixel_values"]}
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([int(example["label"]) for example in examples])
        return batch


class ImageClassificationTask(ClassificationTask):
    name = "image-classification"
    position = 1
    model_class = ViTLlamaForImageClassification
    default_trunk = "vit-tiny"
    builtin = "digits"
    builtin_trunk = "vit-tiny"
    # The main job's trunk: 8x8 digits seen as 16 patches of 2x2 pixels (+ CLS), 2 layers. Larger images or patches
    # measured no better on digits and cost more (docs/training.md).
    builtin_trunk_kwargs = dict(image_size=8, patch_size=2, num_hidden_layers=2)
    dataset_help = "digits (builtin), imagefolder:PATH (class sub-folders or metadata.csv), or a Hub dataset name"
    input_help = "image files (PNG, JPEG, ...; any mode: grayscale and transparency become RGB on white)"
    pipeline_tag = "image-classification"
    summary = "Classifies images (a ViT trunk with a frozen LLM block)."
    primary_metric = "accuracy"
    supports_mixup = True
    training_defaults = dict(label_smoothing_factor=0.1)

    def load_data(self, data_args) -> TaskData:
        from dataclasses import replace

        data_args = replace(data_args, dataset=self.dataset_name(data_args))
        data = load_image_classification_data(data_args)
        data.info["augment"] = use_augmentation(data_args)  # off for digits: crops and flips change the class
        return data

    def make_processor(self, model, data, model_args=None):
        return image_processor_for(model.config, source=getattr(model_args, "trunk", None))

    def load_processor(self, folder: str):
        from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

        from ..errors import RunFolderError

        if not os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
            # Not rebuilt from the config: a model trained with a pretrained trunk's processor (its own mean / std)
            # would silently see other pixel values.
            raise RunFolderError(
                f"{folder} has no preprocessor_config.json, the image processor the model was trained with. Save it "
                "beside the model: `hf_frozenlm.tasks.image_classification.image_processor_for(model.config)"
                ".save_pretrained(FOLDER)` (or the processor you trained with)."
            )
        return ViTImageProcessorPil.from_pretrained(folder)

    def collators(self, model, processor, randomness=0, data: TaskData | None = None):
        augment = data is not None and data.info.get("augment")
        crop_flip = RandomResizedCropFlip(size=processor.size["height"]) if augment else None
        return ImageCollator(processor, crop_flip, ExampleRandomness.of(randomness)), ImageCollator(processor)

    def mixer(self, model_args):
        from ..training.trainer import MixupCutmix

        return MixupCutmix(model_args.mixup, model_args.cutmix) if (model_args.mixup or model_args.cutmix) else None

    # -- predict --------------------------------------------------------------------------------------------
    def read_inputs(self, paths: list[str], options) -> list:
        return read_image_files(paths)

    def predict(self, model, processor, inputs: list, options) -> list[dict]:
        import torch

        with torch.no_grad():
            logits = model(pixel_values=processor(inputs, return_tensors="pt")["pixel_values"]).logits
        top = self.top_labels(logits, model.config.id2label, options.top_k)
        return [{"input": path, "predictions": predictions} for path, predictions in zip(options.inputs, top)]

    def write_example(self, example: dict, stem: str) -> str:
        to_rgb(example["image"]).save(stem + ".png")
        return stem + ".png"

    # -- publishing -----------------------------------------------------------------------------------------
    def usage_snippet(self, repo_id: str, config) -> str:
        size = config.vision_config.image_size
        return f'''```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

classifier = pipeline("image-classification", model="{repo_id}", trust_remote_code=True)
image = Image.new("RGB", ({size}, {size}), "white")  # or Image.open("your_image.png")
print(classifier(image))

processor = AutoImageProcessor.from_pretrained("{repo_id}")
model = AutoModelForImageClassification.from_pretrained("{repo_id}", trust_remote_code=True).eval()
inputs = processor(image, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits
print(model.config.id2label[logits.argmax(-1).item()])

# The encoder alone (ViT trunk + frozen LLM block), e.g. for features:
encoder = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True).eval()
with torch.no_grad():
    features = encoder(**inputs).last_hidden_state  # (batch, 1 + patches, width)
print(features.shape)
```'''

    # -- analysis -------------------------------------------------------------------------------------------
    def token_grid(self, model, inputs: dict) -> TokenGrid:
        base = model.base_model
        patch = base.config.vision_config.patch_size
        patch_h, patch_w = (patch, patch) if isinstance(patch, int) else tuple(patch)
        height, width = inputs["pixel_values"].shape[-2:]
        return TokenGrid(block=base.frozen_lm, trunk_attention=base.vit.layers[-1].attention, num_prefix_tokens=1,
                         grid_shape=(height // patch_h, width // patch_w))


TASK = ImageClassificationTask()
