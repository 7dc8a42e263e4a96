"""Image classification: a ViT trunk + the frozen LLM block + a linear head on the CLS token (the paper's main task).

Builtin: scikit-learn's real 8x8 handwritten digits (offline), drawn dark ink on white. Files: `imagefolder:PATH`
(class sub-folders or a metadata file) or a Hub dataset name. Metrics: accuracy and top-5 accuracy.
"""

from __future__ import annotations

import os

from ..data.images import (
    ImageAugmentation,
    decode_image,
    image_augmentation,
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


def undecoded(split):
    """The split with its images left as bytes (a `datasets.Image(decode=False)` column) for the collator to decode."""
    import datasets

    feature = split.features.get("image") if split.features else None
    return split.cast_column("image", datasets.Image(decode=False)) if isinstance(feature, datasets.Image) else split


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
    """Examples with `image` (PIL, or undecoded {"bytes", "path"}) and `label` -> `pixel_values` and `labels`, through
    the model's image processor; `augment` (training only) is DeiT's augmentation, each example drawing from its own
    generator. Decoding happens here, so DataLoader workers (`--dataloader_num_workers`) decode and augment in
    parallel; `draft_size` decodes JPEGs at reduced size (no smaller than that)."""

    def __init__(self, processor, augment: ImageAugmentation | None = None, randomness=None,
                 draft_size: int | None = None):
        self.processor = processor
        self.augment = augment
        self.randomness = randomness
        self.draft_size = draft_size

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        if not examples:
            raise DataError("Cannot collate an empty batch of images.")
        images = [to_rgb(decode_image(example["image"], self.draft_size)) for example in examples]
        rngs = [self.randomness.rng(example) for example in examples] if self.augment is not None else None
        if self.augment is not None:
            images = [self.augment.on_image(image, rng) for image, rng in zip(images, rngs)]
        pixel_values = self.processor(images, return_tensors="pt")["pixel_values"]
        if self.augment is not None and self.augment.erasing is not None:
            pixel_values = torch.stack([self.augment.on_pixels(pixels, rng) for pixels, rng in zip(pixel_values, rngs)])
        batch = {"pixel_values": pixel_values}
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
        if data_args.streaming:
            from ..data.streaming import load_streaming_image_data

            if self.is_builtin(data_args):
                raise DataError("--streaming reads Hub or local file datasets; the builtin digits load whole. Drop "
                                "--streaming or pass --dataset.")
            data = load_streaming_image_data(data_args, seed=data_args.split_seed)
            data.info["augment"] = use_augmentation(data_args)
            data.info["augmentation_options"] = data_args
            return data
        data = load_image_classification_data(data_args)
        data.info["augment"] = use_augmentation(data_args)  # off for digits: crops and flips change the class
        data.info["augmentation_options"] = data_args  # --aa, --reprob, --scale (the training collator reads them)
        if data_args.draft_decode and not self.is_builtin(data_args):
            data.splits["train"] = undecoded(data.splits["train"])  # decoded by the collator, at reduced size
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
        size = processor.size["height"]
        options = data.info.get("augmentation_options") if data is not None else None
        augment = None
        if options is not None:
            fill = tuple(int(round(255 * mean)) for mean in processor.image_mean)  # geometric ops fill with the mean
            augment = image_augmentation(options, size, fill)
        elif data is not None and data.info.get("augment"):
            augment = ImageAugmentation(crop_flip=RandomResizedCropFlip(size))
        draft = augment.draft_size(size) if augment is not None else size
        return (ImageCollator(processor, augment, ExampleRandomness.of(randomness), draft_size=draft),
                ImageCollator(processor, draft_size=size))

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
