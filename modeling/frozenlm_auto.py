"""Auto classes for the tasks transformers has none for: point-cloud classification, motion forecasting, image-text
retrieval and 3D question answering.

They behave like transformers' own `AutoModelFor...` classes: hf_frozenlm registers its configs with them, and a
saved folder names them in its `auto_map`, so that in a process without hf_frozenlm

    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    auto = get_class_from_dynamic_module("frozenlm_auto.AutoModelForMotionForecasting", folder)
    model = auto.from_pretrained(folder, trust_remote_code=True)

works (`FrozenLMPreTrainedModel.register_for_auto_class` accepts these names). The plainer entry point for those
folders is `AutoModel.from_pretrained(folder, trust_remote_code=True)`, which loads the same task model.

Hub-portable: imports only transformers.
"""

from __future__ import annotations

from collections import OrderedDict

from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping


class AutoModelForPointCloudClassification(_BaseAutoModelClass):
    """Point clouds -> class logits (transformers has no Auto class for point-cloud classification)."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


class AutoModelForMotionForecasting(_BaseAutoModelClass):
    """Scene polylines -> K trajectories and their mode logits (transformers has no Auto class for it)."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


class AutoModelForImageTextRetrieval(_BaseAutoModelClass):
    """(image, text) -> a matching score (transformers has no Auto class for image-text matching)."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


class AutoModelForQuestionAnswering3D(_BaseAutoModelClass):
    """(scene points, question) -> answer logits (transformers has no Auto class for 3D question answering)."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


CUSTOM_AUTO_CLASSES = {
    cls.__name__: cls
    for cls in (AutoModelForPointCloudClassification, AutoModelForMotionForecasting, AutoModelForImageTextRetrieval,
                AutoModelForQuestionAnswering3D)
}
