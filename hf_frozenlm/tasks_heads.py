"""Training the motion-forecasting, VQA, retrieval and 3D-QA heads with transformers' Trainer.

Each task says how to build its model, where its data comes from (an offline builtin or files), how to batch it and
how to score it; `run_head_task` is the shared loop (train, evaluate on validation and test, save model, processor
and metrics.json). It takes the same argument objects as `hf-frozenlm train` (ModelArguments, DataArguments,
TrainingArguments), so the command can dispatch `--task motion-forecasting | visual-question-answering |
image-text-retrieval | 3d-question-answering` here.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

logger = logging.getLogger("hf_frozenlm.train")

HEAD_TASKS = ("motion-forecasting", "visual-question-answering", "image-text-retrieval", "3d-question-answering")
# Scenes / images / rooms generated for each builtin (split 70/10/20 into train/validation/test).
BUILTIN_SIZES = {"road-scenes": 2000, "shapes-vqa": 1500, "shapes-captions": 800, "rooms-qa": 1000}


@dataclass
class HeadTaskSetup:
    """Everything the loop needs for one run."""

    model: object
    splits: dict  # train / validation / test: lists of examples
    collator: Callable
    compute_metrics: Callable | None  # Trainer's compute_metrics, or None when scored by `score`
    processor: object | None = None  # saved beside the model
    score: Callable | None = None  # (model, examples) -> metrics, for tasks Trainer cannot score batch by batch
    preprocess_logits: Callable | None = None


def _split(examples: list, seed: int, validation_fraction=0.1, test_fraction=0.2) -> dict:
    order = np.random.default_rng(seed).permutation(len(examples))
    test, validation = int(len(examples) * test_fraction), int(len(examples) * validation_fraction)
    pick = lambda indices: [examples[i] for i in indices]  # noqa: E731
    return {"test": pick(order[:test]), "validation": pick(order[test:test + validation]),
            "train": pick(order[test + validation:])}


def _llm_kwargs(model_args) -> dict:
    return dict(llm_layers=model_args.llm_layers, variant=model_args.variant, llm_dtype=model_args.llm_dtype,
                llm_trainable=model_args.llm_trainable)


def _trunk(model_args, default: str, builtin_trunk: dict | None):
    """--vision names the trunk; left at an image preset it means this task's default (sized for the builtin)."""
    from .modeling import VIT_PRESETS

    if model_args.vision in VIT_PRESETS:
        return default, builtin_trunk
    return model_args.vision, None


def _motion(model_args, dataset: str, seed: int) -> HeadTaskSetup:
    from .data_motion import builtin_road_scenes, collate_motion, load_argoverse_folder
    from .modeling import VectorNetLlamaForMotionForecasting
    from .task_metrics import motion_forecasting_metrics

    if dataset == "road-scenes":
        splits = _split(builtin_road_scenes(BUILTIN_SIZES[dataset], seed=seed), seed)
    elif dataset.startswith("argoverse:"):
        # argoverse:TRAIN_DIR,VAL_DIR[,LANES_JSON] (the forecasting splits' data folders and your centerlines)
        parts = dataset.split(":", 1)[1].split(",")
        if len(parts) not in (2, 3):
            raise SystemExit("--dataset argoverse:TRAIN_DIR,VAL_DIR[,LANES_JSON]")
        lanes = parts[2] if len(parts) == 3 else None
        validation = load_argoverse_folder(parts[1], lanes)
        splits = {"train": load_argoverse_folder(parts[0], lanes), "validation": validation, "test": validation}
    else:
        raise SystemExit(f"--dataset {dataset!r}: motion-forecasting takes road-scenes or argoverse:TRAIN,VAL[,LANES].")
    trunk, trunk_kwargs = _trunk(model_args, "vectornet-tiny" if dataset == "road-scenes" else "vectornet-base", None)
    model = VectorNetLlamaForMotionForecasting.from_parts(trunk, _llm(model_args), trunk_kwargs=trunk_kwargs,
                                                          **_llm_kwargs(model_args))

    def compute_metrics(prediction):
        trajectories = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return motion_forecasting_metrics(trajectories, prediction.label_ids, model.config.miss_threshold)

    return HeadTaskSetup(model, splits, collate_motion, compute_metrics,
                         preprocess_logits=lambda logits, labels: logits[0])  # keep only the trajectories


def _vqa(model_args, dataset: str, seed: int) -> HeadTaskSetup:
    from .data_vqa import (
        BUILTIN_ANSWERS,
        build_answer_vocabulary,
        builtin_shapes_vqa,
        builtin_vilt_processor,
        load_vqav2,
        vqa_collator,
    )
    from .modeling import ViltLlamaForQuestionAnswering
    from .task_metrics import vqa_soft_accuracy

    processor = builtin_vilt_processor()
    if dataset == "shapes-vqa":
        splits, id2label = _split(builtin_shapes_vqa(BUILTIN_SIZES[dataset], seed=seed), seed), dict(enumerate(BUILTIN_ANSWERS))
    elif dataset.startswith("vqav2:"):
        # vqav2:QUESTIONS_JSON,ANNOTATIONS_JSON,IMAGE_DIR (train) - validation and test are carved from it
        questions, annotations, images = dataset.split(":", 1)[1].split(",")
        examples = load_vqav2(questions, annotations, images)
        splits, id2label = _split(examples, seed), build_answer_vocabulary(examples, max_answers=3129)
        if len(id2label) < 2:
            raise SystemExit("The VQAv2 files hold fewer than two distinct answers.")
    else:
        raise SystemExit(f"--dataset {dataset!r}: visual-question-answering takes shapes-vqa or vqav2:Q,A,IMAGES.")
    trunk, trunk_kwargs = _trunk(model_args, "vilt-tiny", dict(vocab_size=len(processor.tokenizer)))
    model = ViltLlamaForQuestionAnswering.from_parts(trunk, _llm(model_args), trunk_kwargs=trunk_kwargs,
                                                     id2label=id2label, **_llm_kwargs(model_args))
    label2id = {answer: index for index, answer in id2label.items()}

    def compute_metrics(prediction):
        return {"soft_accuracy": vqa_soft_accuracy(prediction.predictions.argmax(-1), prediction.label_ids)}

    # Training drops answers outside the vocabulary, as VQAv2 practice (strict=False); the builtin has none.
    return HeadTaskSetup(model, splits, vqa_collator(processor, label2id, strict=False), compute_metrics, processor)


def _retrieval(model_args, dataset: str, seed: int) -> HeadTaskSetup:
    import torch

    from .data_vqa import builtin_shapes_captions, builtin_vilt_processor, load_flickr30k, retrieval_scores
    from .modeling import ViltLlamaForImageAndTextRetrieval
    from .task_metrics import retrieval_recall_at_k

    processor = builtin_vilt_processor()
    if dataset == "shapes-captions":
        splits = _split(builtin_shapes_captions(BUILTIN_SIZES[dataset], seed=seed), seed)
    elif dataset.startswith("flickr30k:"):
        # flickr30k:KARPATHY_JSON,IMAGE_DIR
        captions, images = dataset.split(":", 1)[1].split(",")
        splits = {name: load_flickr30k(captions, images, split=split)
                  for name, split in (("train", "train"), ("validation", "val"), ("test", "test"))}
    else:
        raise SystemExit(f"--dataset {dataset!r}: image-text-retrieval takes shapes-captions or flickr30k:JSON,IMAGES.")
    trunk, trunk_kwargs = _trunk(model_args, "vilt-tiny",
                                 dict(vocab_size=len(processor.tokenizer), max_position_embeddings=48))
    model = ViltLlamaForImageAndTextRetrieval.from_parts(trunk, _llm(model_args), trunk_kwargs=trunk_kwargs,
                                                         **_llm_kwargs(model_args))
    rng = np.random.default_rng(seed)

    def collate(examples):
        """Each image with one of its captions (label 1) and with the next image's caption in the batch (label 0)."""
        captions = [e["captions"][int(rng.integers(len(e["captions"])))] for e in examples]
        negatives = captions[1:] + captions[:1]
        images = [e["image"] for e in examples]
        batch = processor(images=images + images, text=captions + negatives, padding=True, return_tensors="pt")
        batch["labels"] = torch.cat([torch.ones(len(examples)), torch.zeros(len(examples))])
        return dict(batch)

    def score(trained, examples):
        return retrieval_recall_at_k(*retrieval_scores(trained, processor, examples[:100]))

    return HeadTaskSetup(model, splits, collate, None, processor, score=score)


def _scene_qa(model_args, dataset: str, seed: int) -> HeadTaskSetup:
    from .data_scene_qa import SCENE_ANSWERS, builtin_rooms_qa, builtin_scene_qa_tokenizer, scene_qa_collator
    from .modeling import PointBertLlamaForQuestionAnswering
    from .task_metrics import exact_match

    if dataset != "rooms-qa":
        raise SystemExit(f"--dataset {dataset!r}: 3d-question-answering takes rooms-qa (the builtin).")
    tokenizer = builtin_scene_qa_tokenizer()
    id2label = dict(enumerate(SCENE_ANSWERS))
    builtin_trunk = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                         num_groups=16, group_size=16, point_feature_size=3, group_encoder_hidden_sizes=[32, 32, 64],
                         group_encoder_size=64, position_embedding_size=32, drop_path_rate=0.0,
                         classifier_hidden_size=64, classifier_dropout=0.0)
    trunk, trunk_kwargs = _trunk(model_args, builtin_trunk, None)
    if trunk_kwargs is None:
        trunk_kwargs = dict(point_feature_size=3)  # the rooms' points carry RGB colours
    model = PointBertLlamaForQuestionAnswering.from_parts(
        trunk, _llm(model_args), trunk_kwargs=trunk_kwargs, id2label=id2label, question_vocab_size=len(tokenizer),
        **_llm_kwargs(model_args),
    )

    def compute_metrics(prediction):
        return {"exact_match": exact_match(prediction.predictions.argmax(-1), prediction.label_ids)}

    splits = _split(builtin_rooms_qa(BUILTIN_SIZES[dataset], seed=seed), seed)
    collator = scene_qa_collator(tokenizer, {answer: index for index, answer in id2label.items()})
    return HeadTaskSetup(model, splits, collator, compute_metrics, tokenizer)


def _llm(model_args):
    return None if model_args.variant == "none" else model_args.llm


HEAD_TASK_SETUPS = {
    "motion-forecasting": ("road-scenes", _motion),
    "visual-question-answering": ("shapes-vqa", _vqa),
    "image-text-retrieval": ("shapes-captions", _retrieval),
    "3d-question-answering": ("rooms-qa", _scene_qa),
}


def run_head_task(task: str, model_args, data_args, training_args) -> dict:
    """Train, evaluate and save one of HEAD_TASKS; returns the metrics (also written to metrics.json).

    `--dataset` left at the image default (digits) means the task's builtin."""
    import torch
    from transformers import Trainer

    from .training import check_optimizer_params

    builtin, setup_task = HEAD_TASK_SETUPS[task]
    dataset = builtin if data_args.dataset == "digits" else data_args.dataset
    setup = setup_task(model_args, dataset, data_args.split_seed)
    model = setup.model
    logger.info("Task %s, dataset %s: %s", task, dataset, ", ".join(f"{k} {len(v)}" for k, v in setup.splits.items()))
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters()
                     if "frozen_lm.layers." in n and not p.requires_grad}
    training_args.remove_unused_columns = False  # the collators read the raw examples
    training_args.label_names = ["labels"]
    trainer = Trainer(
        model=model, args=training_args, train_dataset=setup.splits["train"], eval_dataset=setup.splits["validation"],
        data_collator=setup.collator, compute_metrics=setup.compute_metrics,
        preprocess_logits_for_metrics=setup.preprocess_logits,
    )
    trainer.train()
    check_optimizer_params(trainer.optimizer, model)
    for name, parameter in model.named_parameters():
        if name in frozen_before and not torch.equal(parameter.detach(), frozen_before[name]):
            raise AssertionError(f"The frozen LLM tensor {name} changed during training.")
    metrics = {}
    for split, prefix in (("validation", "eval"), ("test", "test")):
        metrics[split] = trainer.evaluate(setup.splits[split], metric_key_prefix=prefix)
        if setup.score is not None:
            metrics[split].update({f"{prefix}_{k}": v for k, v in setup.score(model, setup.splits[split]).items()})
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        if setup.processor is not None:
            setup.processor.save_pretrained(training_args.output_dir)
        with open(os.path.join(training_args.output_dir, "metrics.json"), "w", encoding="utf-8") as handle:
            json.dump({"task": task, "dataset": dataset, **metrics}, handle, indent=2)
        shown = {k: round(v, 4) for k, v in metrics["test"].items() if isinstance(v, float) and "runtime" not in k
                 and "per_second" not in k}
        print(f"\nRun folder: {training_args.output_dir}\ntest metrics: {shown}")
    return metrics
