"""The image processor saved beside every model, so `pipeline("image-classification", model=dir)` works.

transformers' `ViTImageProcessor` needs torchvision, which does not install beside this torch; without it
`AutoImageProcessor` falls back to `ViTImageProcessorPil` with a warning. We build the Pil class directly.
"""

from __future__ import annotations

import os

from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil


def image_processor_for(config, source: str | None = None):
    """The processor for a model config: resize to the trunk's image size, scale to [0, 1], normalise to [-1, 1].

    `source`: a pretrained trunk or model folder; its own `preprocessor_config.json` (mean/std) wins when present.
    """
    vision_config = getattr(config, "vision_config", config)
    size = vision_config.image_size
    if source is not None and os.path.isfile(os.path.join(str(source), "preprocessor_config.json")):
        processor = ViTImageProcessorPil.from_pretrained(source)
        processor.size = {"height": size, "width": size}
        return processor
    return ViTImageProcessorPil(size={"height": size, "width": size})
