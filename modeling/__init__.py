"""Hub-portable model code, installed as `hf_frozenlm.modeling`.

A flat folder of uniquely named modules that import only torch/transformers and each other: `save_pretrained`
copies them into every saved model, where they run without hf_frozenlm installed. Reading order:

- `configuration_frozenlm`: the fields every head shares and the registry of LLM families (a leaf);
- `frozenlm_loading`: reads a few layers of an LLM checkpoint (safetensors, GGUF, Meta), never the whole LLM;
- `frozenlm_hub_ranges`: from a Hub repo, fetches only those layers' bytes (HTTP ranges), cached per layer;
- `frozenlm_block`: the frozen block and the base class of every head (freezing, dtypes, saving, `from_parts`);
- `frozenlm_auto`, `frozenlm_processing`, `frozenlm_pipelines`: Auto classes, processors and pipelines for the
  tasks transformers has none for;
- one configuration/modeling pair per trunk: ViT, VideoMAE, Point-BERT (classification and 3D QA), VectorNet, ViLT
  (VQA and retrieval).
"""

from .configuration_frozenlm import LLM_ARCHITECTURES, FrozenLMConfig
from .configuration_pointbert_llama import PointBertLlamaConfig, PointBertLlamaQAConfig
from .configuration_vectornet_llama import VectorNetLlamaConfig
from .configuration_videomae_llama import VideoMAELlamaConfig
from .configuration_vilt_llama import ViltLlamaConfig, ViltLlamaRetrievalConfig
from .configuration_vit_llama import ViTLlamaConfig
from .frozenlm_auto import (
    CUSTOM_AUTO_CLASSES,
    AutoModelForImageTextRetrieval,
    AutoModelForMotionForecasting,
    AutoModelForPointCloudClassification,
    AutoModelForQuestionAnswering3D,
)
from .frozenlm_block import FrozenLMBlock, FrozenLMPreTrainedModel
from .frozenlm_loading import (
    LLMCheckpointError,
    LLMChecksumError,
    LLMSourceNotFoundError,
    load_llm_config,
    load_llm_layers,
)
from .frozenlm_pipelines import (
    ImageTextRetrievalPipeline,
    MotionForecastingPipeline,
    PointCloudClassificationPipeline,
    QuestionAnswering3DPipeline,
)
from .frozenlm_processing import (
    MotionSceneFeatureExtractor,
    PointCloudFeatureExtractor,
    PointCloudQuestionProcessor,
    ProcessorInputError,
)
from .modeling_pointbert_llama import (
    POINTBERT_PRESETS,
    PointBertLlamaForPointCloudClassification,
    PointBertLlamaForQuestionAnswering,
    PointBertLlamaModel,
    PointBertLlamaPreTrainedModel,
    PointBertLlamaQAModel,
)
from .modeling_vectornet_llama import (
    VECTORNET_PRESETS,
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
    ViltLlamaForImageAndTextRetrieval,
    ViltLlamaForQuestionAnswering,
    ViltLlamaModel,
    ViltLlamaPreTrainedModel,
)
from .modeling_vit_llama import VIT_PRESETS, ViTLlamaForImageClassification, ViTLlamaModel, ViTLlamaPreTrainedModel

# One task head per task, in the order the README lists the tasks.
HEAD_MODELS = (
    ViTLlamaForImageClassification,
    VideoMAELlamaForVideoClassification,
    PointBertLlamaForPointCloudClassification,
    VectorNetLlamaForMotionForecasting,
    ViltLlamaForQuestionAnswering,
    ViltLlamaForImageAndTextRetrieval,
    PointBertLlamaForQuestionAnswering,
)

__all__ = [
    "CUSTOM_AUTO_CLASSES",
    "HEAD_MODELS",
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
    "ImageTextRetrievalPipeline",
    "LLMCheckpointError",
    "LLMChecksumError",
    "LLMSourceNotFoundError",
    "MotionForecastingOutput",
    "MotionForecastingPipeline",
    "MotionSceneFeatureExtractor",
    "PointBertLlamaConfig",
    "PointBertLlamaForPointCloudClassification",
    "PointBertLlamaForQuestionAnswering",
    "PointBertLlamaModel",
    "PointBertLlamaPreTrainedModel",
    "PointBertLlamaQAConfig",
    "PointBertLlamaQAModel",
    "PointCloudClassificationPipeline",
    "PointCloudFeatureExtractor",
    "PointCloudQuestionProcessor",
    "ProcessorInputError",
    "QuestionAnswering3DPipeline",
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
    "ViltLlamaRetrievalConfig",
    "ViTLlamaConfig",
    "ViTLlamaForImageClassification",
    "ViTLlamaModel",
    "ViTLlamaPreTrainedModel",
    "load_llm_config",
    "load_llm_layers",
]
