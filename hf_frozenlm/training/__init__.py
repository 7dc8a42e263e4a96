"""Training every task through transformers' Trainer: arguments, the one loop, the Trainer subclass, LoRA, resuming,
the run folder and loading it back."""

from .arguments import DataArguments, ModelArguments, RunArguments, TrainArguments, parse_train_arguments
from .loading import load_trained_model
from .loop import evaluate_model, train_task
from .trainer import FrozenLMTrainer, FrozenWeightsCallback, FrozenWeightsChangedError

__all__ = [
    "DataArguments", "FrozenLMTrainer", "FrozenWeightsCallback", "FrozenWeightsChangedError", "ModelArguments",
    "RunArguments", "TrainArguments", "evaluate_model", "load_trained_model", "parse_train_arguments", "train_task",
]
