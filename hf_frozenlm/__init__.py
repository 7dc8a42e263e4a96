"""hf_frozenlm: frozen LLM transformer blocks as visual encoder layers (Pang et al., ICLR 2024), for transformers.

Importing the package registers every model with the Auto classes.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForVideoClassification,
    AutoModelForVisualQuestionAnswering,
)

from .modeling import (
    LLM_ARCHITECTURES,
    POINTBERT_PRESETS,
    VECTORNET_PRESETS,
    VIDEOMAE_PRESETS,
    VILT_PRESETS,
    VIT_PRESETS,
    AutoModelForImageTextRetrieval,
    AutoModelForMotionForecasting,
    AutoModelForPointCloudClassification,
    AutoModelForQuestionAnswering3D,
    FrozenLMBlock,
    FrozenLMConfig,
    LLMCheckpointError,
    LLMChecksumError,
    LLMSourceNotFoundError,
    PointBertLlamaConfig,
    PointBertLlamaForPointCloudClassification,
    PointBertLlamaForQuestionAnswering,
    PointBertLlamaModel,
    PointBertLlamaQAConfig,
    VectorNetLlamaConfig,
    VectorNetLlamaForMotionForecasting,
    VectorNetLlamaModel,
    VideoMAELlamaConfig,
    VideoMAELlamaForVideoClassification,
    VideoMAELlamaModel,
    ViltLlamaConfig,
    ViltLlamaForImageAndTextRetrieval,
    ViltLlamaForQuestionAnswering,
    ViltLlamaModel,
    ViTLlamaConfig,
    ViTLlamaForImageClassification,
    ViTLlamaModel,
    load_llm_config,
    load_llm_layers,
)

__version__ = "0.1.0"

AutoConfig.register(ViTLlamaConfig.model_type, ViTLlamaConfig, exist_ok=True)
AutoModel.register(ViTLlamaConfig, ViTLlamaModel, exist_ok=True)
AutoModelForImageClassification.register(ViTLlamaConfig, ViTLlamaForImageClassification, exist_ok=True)
AutoConfig.register(VideoMAELlamaConfig.model_type, VideoMAELlamaConfig, exist_ok=True)
AutoModel.register(VideoMAELlamaConfig, VideoMAELlamaModel, exist_ok=True)
AutoModelForVideoClassification.register(VideoMAELlamaConfig, VideoMAELlamaForVideoClassification, exist_ok=True)
AutoConfig.register(PointBertLlamaConfig.model_type, PointBertLlamaConfig, exist_ok=True)
AutoModel.register(PointBertLlamaConfig, PointBertLlamaModel, exist_ok=True)
AutoModelForPointCloudClassification.register(
    PointBertLlamaConfig, PointBertLlamaForPointCloudClassification, exist_ok=True
)
AutoConfig.register(VectorNetLlamaConfig.model_type, VectorNetLlamaConfig, exist_ok=True)
AutoModel.register(VectorNetLlamaConfig, VectorNetLlamaModel, exist_ok=True)
AutoModelForMotionForecasting.register(VectorNetLlamaConfig, VectorNetLlamaForMotionForecasting, exist_ok=True)
AutoConfig.register(ViltLlamaConfig.model_type, ViltLlamaConfig, exist_ok=True)
AutoModel.register(ViltLlamaConfig, ViltLlamaModel, exist_ok=True)
AutoModelForVisualQuestionAnswering.register(ViltLlamaConfig, ViltLlamaForQuestionAnswering, exist_ok=True)
AutoModelForImageTextRetrieval.register(ViltLlamaConfig, ViltLlamaForImageAndTextRetrieval, exist_ok=True)
AutoConfig.register(PointBertLlamaQAConfig.model_type, PointBertLlamaQAConfig, exist_ok=True)
AutoModelForQuestionAnswering3D.register(PointBertLlamaQAConfig, PointBertLlamaForQuestionAnswering, exist_ok=True)

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
    "LLMCheckpointError",
    "LLMChecksumError",
    "LLMSourceNotFoundError",
    "PointBertLlamaConfig",
    "PointBertLlamaForPointCloudClassification",
    "PointBertLlamaForQuestionAnswering",
    "PointBertLlamaModel",
    "PointBertLlamaQAConfig",
    "VectorNetLlamaConfig",
    "VectorNetLlamaForMotionForecasting",
    "VectorNetLlamaModel",
    "VideoMAELlamaConfig",
    "VideoMAELlamaForVideoClassification",
    "VideoMAELlamaModel",
    "ViltLlamaConfig",
    "ViltLlamaForImageAndTextRetrieval",
    "ViltLlamaForQuestionAnswering",
    "ViltLlamaModel",
    "ViTLlamaConfig",
    "ViTLlamaForImageClassification",
    "ViTLlamaModel",
    "load_llm_config",
    "load_llm_layers",
]
