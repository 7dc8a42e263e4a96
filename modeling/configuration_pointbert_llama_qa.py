"""PointBertLlamaQAConfig: Point-BERT scene tokens, a question encoder, cross-attention fusion and the frozen LLM block
(3D VQA, SQA3D-style; Hub-portable)."""

from __future__ import annotations

from .configuration_pointbert_llama import PointBertLlamaConfig


class PointBertLlamaQAConfig(PointBertLlamaConfig):
    r"""Every `PointBertLlamaConfig` field (the Point-BERT trunk and the frozen block) plus the question side.
    `id2label` / `num_labels` are the answer vocabulary.

    question_vocab_size: token ids of the question tokenizer (saved beside the model).
    max_question_length: the longest question in tokens.
    question_num_layers: layers of the bidirectional LSTM question encoder (SQA3D encodes text with an LSTM).
    num_fusion_layers: rounds of cross-attention (questions attend to the scene, the scene attends to the question).
    """

    model_type = "pointbert_llama_qa"

    question_vocab_size: int = 512
    max_question_length: int = 32
    question_num_layers: int = 1
    num_fusion_layers: int = 1

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.hidden_size % 2:
            raise ValueError(f"hidden_size={self.hidden_size} must be even: the question LSTM runs both directions.")
        if self.question_vocab_size < 1 or self.max_question_length < 1:
            raise ValueError("question_vocab_size and max_question_length must be positive.")
