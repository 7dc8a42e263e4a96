"""hf_frozenlm: frozen LLM transformer blocks as visual encoder layers (Pang et al., ICLR 2024), for transformers.

Importing the package registers every task model with the Auto classes (transformers' own and, for the tasks it
has none for, those in `hf_frozenlm.modeling.frozenlm_auto`).
"""

import sys

import transformers
from transformers import AutoConfig

from .modeling import *  # noqa: F403  (the model classes are the package's public API)
from .modeling import (
    CUSTOM_AUTO_CLASSES,
    HEAD_MODELS,
    MotionSceneFeatureExtractor,
    PointBertLlamaConfig,
    PointBertLlamaQAConfig,
    PointCloudFeatureExtractor,
    PointCloudQuestionProcessor,
    VectorNetLlamaConfig,
)
from .modeling import __all__ as _modeling_all

__version__ = "0.2.0"


def _register_auto_classes() -> None:
    """Each head's config with AutoConfig, and each of its `auto_map_entries` with that Auto class: in this process
    the Auto classes then load saved folders with the package's classes, exactly as remote code does elsewhere."""
    for head in HEAD_MODELS:
        config_class = head.config_class
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        for auto_name, class_name in head.auto_map_entries.items():
            auto_class = CUSTOM_AUTO_CLASSES.get(auto_name) or getattr(transformers, auto_name)
            auto_class.register(config_class, getattr(sys.modules[head.__module__], class_name), exist_ok=True)


def _register_processor_classes() -> None:
    """The processors our models need that transformers does not define, with the Auto classes that load them, so
    that `AutoFeatureExtractor` / `AutoProcessor` find them in this process without trust_remote_code (elsewhere the
    saved folder's auto_map names the same classes)."""
    from transformers import AutoFeatureExtractor, AutoProcessor

    for config_class, feature_extractor in ((PointBertLlamaConfig, PointCloudFeatureExtractor),
                                            (PointBertLlamaQAConfig, PointCloudFeatureExtractor),
                                            (VectorNetLlamaConfig, MotionSceneFeatureExtractor)):
        AutoFeatureExtractor.register(config_class, feature_extractor, exist_ok=True)
    AutoProcessor.register(PointBertLlamaQAConfig, PointCloudQuestionProcessor, exist_ok=True)


_register_auto_classes()
_register_processor_classes()

__all__ = [*_modeling_all, "__version__"]
