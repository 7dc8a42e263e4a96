"""Hub-portable model code, installed as `hf_frozenlm.modeling`.

A flat folder of uniquely named modules that import only torch/transformers and each other: `save_pretrained`
copies them into every saved model, where they run without hf_frozenlm installed.
"""

from .configuration_frozenlm import FrozenLMConfig
from .configuration_pointbert_llama import PointBertLlamaConfig
from .configuration_pointbert_llama_qa import PointBertLlamaQAConfig
from .configuration_vectornet_llama import VectorNetLlamaConfig
from .configuration_videomae_llama import VideoMAELlamaConfig
from .configuration_vilt_llama import ViltLlamaConfig
from .configuration_vit_llama import ViTLlamaConfig
from .frozenlm_block import LLM_ARCHITECTURES, FrozenLMBlock, FrozenLMPreTrainedModel
from .frozenlm_loading import (
    LLMCheckpointError,
    LLMChecksumError,
    LLMSourceNotFoundError,
    load_llm_config,
    load_llm_layers,
)
from .modeling_pointbert_llama import (
    POINTBERT_PRESETS,
    AutoModelForPointCloudClassification,
    PointBertLlamaForPointCloudClassification,
    PointBertLlamaModel,
    PointBertLlamaPreTrainedModel,
    PointCloudClassifierOutput,
)
from .modeling_pointbert_llama_qa import AutoModelForQuestionAnswering3D, PointBertLlamaForQuestionAnswering
from .modeling_vectornet_llama import (
    VECTORNET_PRESETS,
    AutoModelForMotionForecasting,
    MotionForecastingOutput,
    VectorNetLlamaForMotionForecasting,
    VectorNetLlamaModel,
    VectorNetLlamaPreTrainedModel,
)
from .modeling_videomae_llama import (
    VIDEOMAE_PRESETS,
    VideoMAELlamaForVideoClassification,
    VideoMAELlamaModel,
    VideoMAELlamaPreTrainedModel,
)
from .modeling_vilt_llama import (
    VILT_PRESETS,
    AutoModelForImageTextRetrieval,
    ViltLlamaForImageAndTextRetrieval,
    ViltLlamaForQuestionAnswering,
    ViltLlamaModel,
    ViltLlamaPreTrainedModel,
)
from .modeling_vit_llama import VIT_PRESETS, ViTLlamaForImageClassification, ViTLlamaModel, ViTLlamaPreTrainedModel

__all__ = [
    "LLM_ARCHITECTURES",
    "POINTBERT_PRESETS",
    "VECTORNET_PRESETS",
    "VIDEOMAE_PRESETS",
    "VILT_PRESETS",
    "VIT_PRESETS",
    "AutoModelForImageTextRetrieval",
    "AutoModelForMotionForecasting",
    "AutoModelForPointCloudClassification",
    "AutoModelForQuestionAnswering3D",
    "FrozenLMBlock",
    "FrozenLMConfig",
    "FrozenLMPreTrainedModel",
    "LLMCheckpointError",
    "LLMChecksumError",
    "LLMSourceNotFoundError",
    "MotionForecastingOutput",
    "PointBertLlamaConfig",
    "PointBertLlamaForPointCloudClassification",
    "PointBertLlamaForQuestionAnswering",
    "PointBertLlamaModel",
    "PointBertLlamaPreTrainedModel",
    "PointBertLlamaQAConfig",
    "PointCloudClassifierOutput",
    "VectorNetLlamaConfig",
    "VectorNetLlamaForMotionForecasting",
    "VectorNetLlamaModel",
    "VectorNetLlamaPreTrainedModel",
    "VideoMAELlamaConfig",
    "VideoMAELlamaForVideoClassification",
    "VideoMAELlamaModel",
    "VideoMAELlamaPreTrainedModel",
    "ViltLlamaConfig",
    "ViltLlamaForImageAndTextRetrieval",
    "ViltLlamaForQuestionAnswering",
    "ViltLlamaModel",
    "ViltLlamaPreTrainedModel",
    "ViTLlamaConfig",
    "ViTLlamaForImageClassification",
    "ViTLlamaModel",
    "ViTLlamaPreTrainedModel",
    "load_llm_config",
    "load_llm_layers",
]
