"""The ViLT tabs: visual question answering (an image and a question -> the top answers with their scores and the
image's token maps) and image-text retrieval (an image and candidate captions -> the captions ranked; or a caption
and candidate images -> the images ranked).

Images go through the image tab's reader (`demo_image.open_upload`: the same pixel limit, EXIF rotation, shrinking
before anything else); texts are checked for length and emptiness before they reach the tokenizer.
"""

from __future__ import annotations

import gradio as gr
import torch
from transformers import AutoModel, AutoModelForVisualQuestionAnswering, AutoProcessor

if __package__:
    from .demo_common import InputProblem, check_text, elapsed_ms, example_files, example_options, guarded, load_model
    from .demo_common import model_header, overlay, run_with_maps, top_scores
    from .demo_image import open_upload, pass_unreadable_uploads_on
else:  # on the Space, beside app.py
    from demo_common import InputProblem, check_text, elapsed_ms, example_files, example_options, guarded, load_model
    from demo_common import model_header, overlay, run_with_maps, top_scores
    from demo_image import open_upload, pass_unreadable_uploads_on

TASKS = ("visual-question-answering", "image-text-retrieval")
MAX_TEXT_CHARS = 200  # a question or one caption
MAX_CANDIDATES = 16  # captions or images ranked in one request (one forward pass per pair)
TILE_SIDE = 160
LIMITS = {"text": f"{MAX_TEXT_CHARS} characters per question or caption",
          "candidates": f"{MAX_CANDIDATES} captions or images per ranking"}


def candidate_captions(text: str | None) -> list[str]:
    """One caption per non-empty line; InputProblem when there are none, too many, or one is too long."""
    captions = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not captions:
        raise InputProblem("No candidate captions: type one per line.")
    if len(captions) > MAX_CANDIDATES:
        raise InputProblem(f"{len(captions)} captions; the demo ranks up to {MAX_CANDIDATES}. Please remove some.")
    return [check_text(caption, "caption", MAX_TEXT_CHARS) for caption in captions]


class Tab:
    """A ViLT tab for one model: question answering, or retrieval in both directions."""

    def __init__(self, model_id: str, task: str):
        self.model_id, self.task = model_id, task
        self.retrieval = task == "image-text-retrieval"
        self.title = "Image-text retrieval" if self.retrieval else "Visual question answering"
        # VQA's AutoModel is the encoder; its task head loads through AutoModelForVisualQuestionAnswering.
        self.model = load_model(model_id, AutoModel if self.retrieval else AutoModelForVisualQuestionAnswering)
        self.processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
        self.text_limit = int(self.model.config.vilt_config.max_position_embeddings)

    def encode(self, images, texts) -> dict:
        return dict(self.processor(images=images, text=texts, padding=True, truncation=True,
                                   max_length=self.text_limit, return_tensors="pt"))

    def answer(self, path, question):
        """(top-5 {answer: score}, map tiles) for an image file and a question."""
        image = open_upload(path)
        question = check_text(question, "question", MAX_TEXT_CHARS)
        outputs, maps, _ = run_with_maps(self.model, self.encode([image], [question]), kinds=("magnitude",))
        # Each answer's sigmoid: the model scores answers independently, as ViLT trains them.
        answers = top_scores(outputs.logits[0].sigmoid(), self.model.config.id2label)
        tiles = [(overlay(image, stage_maps[0].numpy(), TILE_SIDE), caption)
                 for stage, caption in (("trunk", "magnitude · trunk output"), ("block", "magnitude · after block"))
                 if (stage_maps := maps["magnitude"].get(stage)) is not None]
        return answers, tiles

    def match_scores(self, images, texts) -> torch.Tensor:
        """The match probability of each (image, text) pair (the head is trained with binary cross-entropy)."""
        with torch.inference_mode():
            return self.model(**self.encode(images, texts)).logits[:, 0].float().sigmoid()

    def rank_captions(self, path, text):
        image, captions = open_upload(path), candidate_captions(text)
        scores = self.match_scores([image] * len(captions), captions)
        return dict(sorted(zip(captions, map(float, scores)), key=lambda pair: -pair[1]))

    def rank_images(self, caption, paths):
        caption = check_text(caption, "caption", MAX_TEXT_CHARS)
        paths = [getattr(path, "name", path) for path in (paths or [])]
        if not paths:
            raise InputProblem("No candidate images: upload two or more.")
        if len(paths) > MAX_CANDIDATES:
            raise InputProblem(f"{len(paths)} images; the demo ranks up to {MAX_CANDIDATES}. Please remove some.")
        images = [open_upload(path) for path in paths]
        scores = self.match_scores(images, [caption] * len(images))
        order = scores.argsort(descending=True, stable=True)
        return [(images[int(i)], f"{rank + 1}. match {float(scores[i]):.2f}") for rank, i in enumerate(order)]

    def run_vqa(self, path, question, started):
        answers, tiles = self.answer(path, question)
        best = next(iter(answers))
        return answers, tiles, f"Answer **{best}** (score {answers[best]:.2f}) in {elapsed_ms(started)}, maps included."

    def run_captions(self, path, text, started):
        ranked = self.rank_captions(path, text)
        best = next(iter(ranked))
        return ranked, f"Best caption **{best}** (match {ranked[best]:.2f}) in {elapsed_ms(started)}."

    def run_images(self, caption, paths, started):
        ranked = self.rank_images(caption, paths)
        return ranked, f"Best image: {ranked[0][1].split('. ', 1)[1]} of {len(ranked)}, in {elapsed_ms(started)}."

    def build(self, api_name: str) -> None:
        gr.Markdown(model_header(self.model_id, self.model))
        if self.retrieval:
            self.build_retrieval(api_name)
        else:
            self.build_vqa(api_name)

    def build_vqa(self, api_name: str) -> None:
        with gr.Row():
            with gr.Column(scale=1):
                image = pass_unreadable_uploads_on(gr.Image(type="filepath", image_mode=None, label="Image",
                                                            sources=["upload", "clipboard"], height=240))
                question = gr.Textbox(label="Question", max_length=MAX_TEXT_CHARS, placeholder="what color is the "
                                      "circle?")
                button = gr.Button("Answer", variant="primary", elem_id=f"{api_name}-run")
                files, questions = example_files(self.task, "*.png"), example_options(self.task).get("question") or []
                if files and questions:
                    gr.Examples([[path, questions[i % len(questions)]] for i, path in enumerate(files)],
                                inputs=[image, question], label="Examples (builtin)", elem_id=f"{api_name}-examples")
            with gr.Column(scale=2):
                status = gr.Markdown("Upload an image and ask a question, or pick an example.",
                                     elem_id=f"{api_name}-status")
                answers = gr.Label(num_top_classes=5, label="Top 5 answers")
                tiles = gr.Gallery(label="Token maps over the image", columns=2, height="auto", object_fit="contain",
                                   allow_preview=False)
        button.click(guarded(self.run_vqa, "answering"), [image, question], [answers, tiles, status],
                     api_name=api_name, concurrency_limit=1, concurrency_id="model")

    def build_retrieval(self, api_name: str) -> None:
        texts = example_options(self.task).get("texts") or []
        with gr.Tab("Image → captions"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = pass_unreadable_uploads_on(gr.Image(type="filepath", image_mode=None, label="Image",
                                                                sources=["upload", "clipboard"], height=240))
                    captions = gr.Textbox(label=f"Candidate captions, one per line (up to {MAX_CANDIDATES})", lines=5)
                    button = gr.Button("Rank captions", variant="primary", elem_id=f"{api_name}-run")
                    files = example_files(self.task, "*.png")
                    if files and texts:
                        gr.Examples([[path, "\n".join(texts)] for path in files], inputs=[image, captions],
                                    label="Examples (builtin)", elem_id=f"{api_name}-examples")
                with gr.Column(scale=2):
                    status = gr.Markdown("Upload an image and candidate captions, or pick an example.",
                                         elem_id=f"{api_name}-status")
                    ranked = gr.Label(num_top_classes=MAX_CANDIDATES, label="Captions, best match first")
        with gr.Tab("Caption → images"):
            with gr.Row():
                with gr.Column(scale=1):
                    caption = gr.Textbox(label="Caption", max_length=MAX_TEXT_CHARS, value=texts[0] if texts else "")
                    candidates = gr.File(label=f"Candidate images (up to {MAX_CANDIDATES})", file_count="multiple",
                                         file_types=["image"], type="filepath",
                                         value=example_files(self.task, "*.png") or None)
                    image_button = gr.Button("Rank images", variant="primary", elem_id=f"{api_name}-images-run")
                with gr.Column(scale=2):
                    image_status = gr.Markdown("Type a caption and upload candidate images.",
                                               elem_id=f"{api_name}-images-status")
                    gallery = gr.Gallery(label="Images, best match first", columns=4, height="auto",
                                         object_fit="contain", allow_preview=False)
        button.click(guarded(self.run_captions, "ranking the captions"), [image, captions], [ranked, status],
                     api_name=api_name, concurrency_limit=1, concurrency_id="model")
        image_button.click(guarded(self.run_images, "ranking the images"), [caption, candidates],
                           [gallery, image_status], api_name=f"{api_name}_images", concurrency_limit=1,
                           concurrency_id="model")
