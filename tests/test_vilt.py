"""ViltLlama VQA and retrieval: invariants, padding, metrics, builtin shapes, processor, VQAv2/Flickr30k files, bad input."""

import copy
import json
from collections import Counter

import numpy as np
import pytest
import torch
from heads_helpers import assert_llm_frozen, llm_tensors, run_remote, tiny_llama, train_steps
from transformers import AutoModel, AutoModelForVisualQuestionAnswering, AutoProcessor

from hf_frozenlm import (
    AutoModelForImageTextRetrieval,
    ViltLlamaForImageAndTextRetrieval,
    ViltLlamaForQuestionAnswering,
    ViltLlamaModel,
)
from hf_frozenlm.data_vqa import (
    BUILTIN_ANSWERS,
    VQADataError,
    answer_targets,
    build_answer_vocabulary,
    builtin_shapes_captions,
    builtin_shapes_vqa,
    builtin_vilt_processor,
    load_flickr30k,
    load_vqav2,
    retrieval_scores,
    vqa_collator,
)
from hf_frozenlm.task_metrics import retrieval_recall_at_k, vqa_answer_scores, vqa_soft_accuracy

ID2LABEL = dict(enumerate(BUILTIN_ANSWERS))
LABEL2ID = {answer: index for index, answer in ID2LABEL.items()}


@pytest.fixture(scope="module")
def processor():
    return builtin_vilt_processor()


@pytest.fixture(scope="module")
def examples():
    return builtin_shapes_vqa(4, seed=5)


def build(cls=ViltLlamaForQuestionAnswering, smollm2=None, llm=None, **kwargs):
    torch.manual_seed(0)
    options = dict(trunk_kwargs=dict(vocab_size=512))
    if cls is ViltLlamaForQuestionAnswering:
        options["id2label"] = ID2LABEL
    options.update(kwargs)
    if smollm2 is None:
        return cls.from_parts("vilt-tiny", llm or tiny_llama(), **options)
    llm_config, layer_states, provenance = smollm2
    model = cls.from_parts("vilt-tiny", copy.deepcopy(llm_config), **options)
    model.vilt_llama.frozen_lm.load_llm_layer_states(layer_states)
    model.config.llm_source = dict(provenance)
    return model


def inputs_of(batch):
    return {key: value for key, value in batch.items() if key != "labels"}


def test_frozen_stays_frozen_through_training(processor, examples, smollm2_last_layer):
    model = build(smollm2=smollm2_last_layer)
    assert_llm_frozen(model)
    model.train()
    model.load_state_dict(model.state_dict())
    assert_llm_frozen(model)
    before = llm_tensors(model)
    classifier_before = model.classifier[0].weight.detach().clone()
    collate = vqa_collator(processor, LABEL2ID)
    train_steps(model, [collate(examples[:4]), collate(examples[4:])])
    for name, tensor in llm_tensors(model).items():
        assert torch.equal(tensor, before[name]), name
    assert not torch.equal(model.classifier[0].weight, classifier_before)
    assert_llm_frozen(model)


def test_save_reload_and_remote_code_with_the_processor(processor, examples, tmp_path):
    model = build().eval()
    retrieval = build(ViltLlamaForImageAndTextRetrieval).eval()
    folder, retrieval_folder = tmp_path / "vqa", tmp_path / "retrieval"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    retrieval.save_pretrained(retrieval_folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_vilt_llama.ViltLlamaConfig",
        "AutoModel": "modeling_vilt_llama.ViltLlamaModel",
        "AutoModelForVisualQuestionAnswering": "modeling_vilt_llama.ViltLlamaForQuestionAnswering",
        "AutoModelForImageTextRetrieval": "modeling_vilt_llama.ViltLlamaForImageAndTextRetrieval",
    }
    batch = inputs_of(vqa_collator(processor)(examples[:3]))
    reloaded = AutoModelForVisualQuestionAnswering.from_pretrained(folder).eval()
    assert type(reloaded) is ViltLlamaForQuestionAnswering
    assert_llm_frozen(reloaded)
    assert type(AutoModel.from_pretrained(folder)) is ViltLlamaModel
    reloaded_retrieval = AutoModelForImageTextRetrieval.from_pretrained(retrieval_folder).eval()
    assert type(reloaded_retrieval) is ViltLlamaForImageAndTextRetrieval
    with torch.no_grad():
        logits = model(**batch).logits
        assert torch.equal(reloaded(**batch).logits, logits)
        reloaded_scores = reloaded_retrieval(**batch).logits
        # One output unit makes rank_output a dot product whose summation order depends on the weight's memory
        # alignment (safetensors loads it at a file offset), so the last bit may differ; the weights are equal.
        assert torch.equal(reloaded_retrieval.rank_output.weight, retrieval.rank_output.weight)
        torch.testing.assert_close(reloaded_scores, retrieval(**batch).logits, rtol=0, atol=1e-6)
    examples[0]["image"].save(tmp_path / "image.png")
    result = run_remote(
        """
        from PIL import Image
        from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor
        vqa = AutoModelForVisualQuestionAnswering.from_pretrained(folder, trust_remote_code=True).eval()
        retrieval = head_class("AutoModelForImageTextRetrieval").from_pretrained(folder.replace("vqa", "retrieval")).eval()
        processor = AutoProcessor.from_pretrained(folder)
        encoded = processor(images=Image.open("image.png").convert("RGB"), text=inputs["question"], return_tensors="pt")
        with torch.no_grad():
            out = {"logits": vqa(**inputs["batch"]).logits, "retrieval": retrieval(**inputs["batch"]).logits,
                   "encoded": vqa(**encoded).logits}
        out["module"] = type(vqa).__module__
        out["frozen"] = [p.requires_grad for n, p in vqa.named_parameters() if ".frozen_lm.layers." in n]
        torch.save(out, out_path)
        """,
        folder, {"batch": batch, "question": examples[0]["question"]}, tmp_path,
    )
    assert result["module"].startswith("transformers_modules.")
    assert result["frozen"] and not any(result["frozen"])
    assert torch.equal(result["logits"], logits)
    assert torch.equal(result["retrieval"], reloaded_scores)  # the same file, hence the same alignment
    with torch.no_grad():
        local = processor(images=examples[0]["image"], text=examples[0]["question"], return_tensors="pt")
        torch.testing.assert_close(result["encoded"], model(**local).logits, rtol=0, atol=1e-6)  # PNG round trip


def test_text_and_image_padding_do_not_leak(processor, examples):
    model = build().eval()
    batch = inputs_of(vqa_collator(processor)(examples[:2]))
    length = batch["input_ids"].shape[1]
    padded = dict(batch)
    padded["input_ids"] = torch.cat([batch["input_ids"], torch.randint(5, 100, (2, 6))], dim=1)  # garbage pads
    padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros(2, 6, dtype=torch.long)], dim=1)
    padded["token_type_ids"] = torch.zeros_like(padded["input_ids"])
    pixels = torch.randn(2, 3, 80, 64) * 3  # a larger canvas of noise; only the top-left 48 x 48 is the image
    pixels[:, :, :48, :48] = batch["pixel_values"]
    padded["pixel_values"] = pixels
    padded["pixel_mask"] = torch.zeros(2, 80, 64, dtype=torch.long)
    padded["pixel_mask"][:, :48, :48] = 1
    with torch.no_grad():
        plain, more = model(**batch, output_hidden_states=True), model(**padded, output_hidden_states=True)
    torch.testing.assert_close(more.logits, plain.logits, rtol=0, atol=1e-5)
    # The frozen block's outputs of the valid text tokens are unchanged too.
    torch.testing.assert_close(more.hidden_states[-1][:, :length], plain.hidden_states[-1][:, :length], rtol=0, atol=1e-5)


def test_vqa_loss_is_vilts_scaled_bce(processor, examples):
    model = build().eval()
    batch = vqa_collator(processor, LABEL2ID)(examples[:3])
    with torch.no_grad():
        out = model(**batch)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch["labels"]) * len(ID2LABEL)
    torch.testing.assert_close(out.loss, expected)


def test_metrics_equal_hand_computed_values():
    assert vqa_answer_scores(["2"] * 4 + ["3"] * 2 + ["4"]) == {"2": 1.0, "3": pytest.approx(2 / 3), "4": pytest.approx(1 / 3)}
    scores = np.array([[1.0, 2 / 3, 0.0], [0.0, 1 / 3, 1.0]])
    assert vqa_soft_accuracy([1, 1], scores) == pytest.approx((2 / 3 + 1 / 3) / 2)
    # 3 images, 4 texts (image 0 has two). Scores (images x texts):
    pair_scores = np.array([
        [0.1, 0.9, 0.8, 0.0],  # image 0: best texts 1 (its own), 2
        [0.5, 0.4, 0.3, 0.2],  # image 1: best text 0 (image 0's), its own text 2 is third
        [0.0, 0.0, 0.9, 1.0],  # image 2: best text 3 (its own)
    ])
    text_images = [0, 0, 1, 2]
    recall = retrieval_recall_at_k(pair_scores, text_images, ks=(1, 2))
    assert recall["i2t_R@1"] == pytest.approx(2 / 3) and recall["i2t_R@2"] == pytest.approx(2 / 3)
    # Images ranked per text: text 0 -> 1, 0 (hit at k=2); text 1 -> 0 (hit); text 2 -> 2, 0, 1 (its image 1 is
    # third: miss); text 3 -> 2 (hit).
    assert recall["t2i_R@1"] == pytest.approx(2 / 4) and recall["t2i_R@2"] == pytest.approx(3 / 4)


def test_builtin_processor_tokenizer_and_answers(processor, examples, tmp_path):
    tokenizer = processor.tokenizer
    texts = [e["question"] for e in builtin_shapes_vqa(30, seed=9)] + [c for e in builtin_shapes_captions(30, 9) for c in e["captions"]]
    assert tokenizer.unk_token_id not in {t for ids in tokenizer(texts)["input_ids"] for t in ids}
    processor.save_pretrained(tmp_path / "processor")
    again = AutoProcessor.from_pretrained(tmp_path / "processor")
    assert again.tokenizer(texts[:3])["input_ids"] == tokenizer(texts[:3])["input_ids"]
    assert type(processor.image_processor).__name__ == "ViltImageProcessorPil"  # no torchvision needed
    encoded = processor(images=examples[0]["image"], text=examples[0]["question"], return_tensors="pt")
    assert encoded["pixel_values"].shape == (1, 3, 48, 48)
    counts = Counter(a for e in builtin_shapes_vqa(200, seed=0) for a in e["answers"][:1])
    assert set(counts) <= set(BUILTIN_ANSWERS) and counts["yes"] and counts["no"] and counts["red"]


def train_builtin(model, batches, steps, lr):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        loss = model(**batches(step)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def test_builtin_vqa_trains_above_the_majority_answer(processor):
    """Tiny ViLT + a frozen random 1-layer LLaMA, 400 steps of 32 questions (about 30 s on one CPU thread).

    Measured on 150 held-out scenes (~520 questions): soft accuracy 0.36 against 0.22 for the majority answer."""
    train, test = builtin_shapes_vqa(600, seed=0), builtin_shapes_vqa(150, seed=1)
    collate = vqa_collator(processor, LABEL2ID)
    train_batch, test_batch = collate(train), collate(test)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = build(llm=tiny_llama(hidden_size=64, intermediate_size=128, num_hidden_layers=1), variant="random-llm",
                  trunk_kwargs=dict(vocab_size=len(processor.tokenizer)))

    def batches(step):
        index = torch.from_numpy(rng.choice(len(train), 32, replace=False))
        return {key: value[index] for key, value in train_batch.items()}

    train_builtin(model, batches, 400, 3e-3)
    with torch.no_grad():
        predictions = model(**inputs_of(test_batch)).logits.argmax(-1).numpy()
    accuracy = vqa_soft_accuracy(predictions, test_batch["labels"].numpy())
    majority = Counter(e["answers"][0] for e in train).most_common(1)[0][0]
    baseline = vqa_soft_accuracy(np.full(len(test), LABEL2ID[majority]), test_batch["labels"].numpy())
    print(f"builtin VQA soft accuracy {accuracy:.3f}, majority answer {majority!r} {baseline:.3f}")
    assert accuracy > baseline + 0.08


def test_builtin_retrieval_trains_above_chance(processor):
    """Image-text matching on 600 scenes (16 matching + 16 random mismatched pairs per step, 400 steps), then recall@k
    over 50 held-out images x 50 captions. Measured: R@1 0.06 / R@5 0.36-0.38 / R@10 0.64-0.66 (image->text /
    text->image); chance is 0.02 / 0.10 / 0.20. The loss sits at ln 2 for ~200 steps before matching is found."""
    train, test = builtin_shapes_captions(600, seed=0), builtin_shapes_captions(50, seed=1)
    images = processor.image_processor([e["image"] for e in train], return_tensors="pt")
    captions = processor.tokenizer([e["captions"][0] for e in train], padding=True, return_tensors="pt")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = build(ViltLlamaForImageAndTextRetrieval, llm=tiny_llama(hidden_size=64, intermediate_size=128,
                  num_hidden_layers=1), variant="random-llm", trunk_kwargs=dict(vocab_size=len(processor.tokenizer),
                  max_position_embeddings=48))

    def batches(step):
        index = torch.from_numpy(rng.choice(len(train), 16, replace=False))
        negative = (index + torch.from_numpy(rng.integers(1, len(train), 16))) % len(train)
        return {
            "pixel_values": images["pixel_values"][index].repeat(2, 1, 1, 1),
            "pixel_mask": images["pixel_mask"][index].repeat(2, 1, 1),
            "input_ids": torch.cat([captions["input_ids"][index], captions["input_ids"][negative]]),
            "attention_mask": torch.cat([captions["attention_mask"][index], captions["attention_mask"][negative]]),
            "labels": torch.cat([torch.ones(16), torch.zeros(16)]),
        }

    train_builtin(model, batches, RETRIEVAL_STEPS, RETRIEVAL_LR)
    recall = retrieval_recall_at_k(*retrieval_scores(model, processor, test))
    print("builtin retrieval recall:", recall)
    assert recall["i2t_R@5"] > 0.25 and recall["t2i_R@5"] > 0.25
    assert recall["i2t_R@10"] > 0.4 and recall["t2i_R@10"] > 0.4


RETRIEVAL_STEPS, RETRIEVAL_LR = 400, 3e-3


def test_vqav2_and_flickr30k_files(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    for image_id in (1, 2):
        Image.new("RGB", (20, 10), (image_id * 50, 0, 0)).save(tmp_path / "images" / f"COCO_val2014_{image_id:012d}.jpg")
    (tmp_path / "q.json").write_text(json.dumps({"questions": [
        {"question_id": 10, "image_id": 1, "question": "what color?"},
        {"question_id": 20, "image_id": 2, "question": "is it red?"},
    ]}))
    (tmp_path / "a.json").write_text(json.dumps({"annotations": [
        {"question_id": 10, "image_id": 1, "answers": [{"answer": "red"}] * 7 + [{"answer": "pink"}] * 3},
        {"question_id": 20, "image_id": 2, "answers": [{"answer": "yes"}] * 2 + [{"answer": "no"}] * 8},
    ]}))
    vqa = load_vqav2(tmp_path / "q.json", tmp_path / "a.json", tmp_path / "images")
    assert [e["question"] for e in vqa] == ["what color?", "is it red?"] and vqa[0]["image"].size == (20, 10)
    id2label = build_answer_vocabulary(vqa)
    assert id2label == {0: "no", 1: "red", 2: "pink", 3: "yes"}
    label2id = {v: k for k, v in id2label.items()}
    torch.testing.assert_close(answer_targets(vqa[1]["answers"], label2id), torch.tensor([1.0, 0.0, 0.0, 2 / 3]))
    (tmp_path / "captions.json").write_text(json.dumps({"images": [
        {"filename": "COCO_val2014_000000000001.jpg", "split": "test", "sentences": [{"raw": "a red image"}, {"raw": "red"}]},
        {"filename": "COCO_val2014_000000000002.jpg", "split": "train", "sentences": [{"raw": "darker red"}]},
    ]}))
    flickr = load_flickr30k(tmp_path / "captions.json", tmp_path / "images", split="test")
    assert len(flickr) == 1 and flickr[0]["captions"] == ["a red image", "red"]
    with pytest.raises(VQADataError, match="no images in split"):
        load_flickr30k(tmp_path / "captions.json", tmp_path / "images", split="val")
    (tmp_path / "q.json").write_text(json.dumps({"questions": [{"question_id": 30, "image_id": 1, "question": "?"}]}))
    with pytest.raises(VQADataError, match="has no annotation"):
        load_vqav2(tmp_path / "q.json", tmp_path / "a.json", tmp_path / "images")


def test_bad_input_gives_clear_errors(processor, examples):
    model = build().eval()
    batch = inputs_of(vqa_collator(processor)(examples[:2]))
    with pytest.raises(ValueError, match="2 texts"):
        model(**{**batch, "pixel_values": batch["pixel_values"][:1], "pixel_mask": None})
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(**{**batch, "attention_mask": batch["attention_mask"][:, :-1]})
    with pytest.raises(ValueError, match="pixel_mask has shape"):
        model(**{**batch, "pixel_mask": batch["pixel_mask"][:, :-1]})
    with pytest.raises(ValueError, match="image is empty"):
        model(**{**batch, "pixel_mask": torch.zeros_like(batch["pixel_mask"])})
    with pytest.raises(ValueError, match="text is empty"):
        model(**{**batch, "attention_mask": torch.zeros_like(batch["attention_mask"])})
    with pytest.raises(ValueError, match="at most"):
        model(**{**batch, "input_ids": torch.ones(2, 100, dtype=torch.long), "attention_mask": None,
                 "token_type_ids": None})
    with pytest.raises(ValueError, match="soft scores over the answer vocabulary"):
        model(**batch, labels=torch.tensor([1, 2]))
    with pytest.raises(VQADataError, match=r"\['maybe'\] are not in the answer vocabulary"):
        answer_targets(["yes", "maybe"], LABEL2ID)
    assert answer_targets(["yes", "maybe"], LABEL2ID, strict=False)[LABEL2ID["yes"]] == pytest.approx(1 / 3)
    with pytest.raises(VQADataError, match="not in the answer vocabulary"):
        vqa_collator(processor, LABEL2ID)([{**examples[0], "answers": ["purple"]}])
    with pytest.raises(VQADataError, match="empty list"):
        vqa_collator(processor)([])
    retrieval = build(ViltLlamaForImageAndTextRetrieval).eval()
    with pytest.raises(ValueError, match="1 \\(match\\) / 0"):
        retrieval(**batch, labels=torch.ones(2, 3))
