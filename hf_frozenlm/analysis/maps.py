"""The paper's evidence for its information-filtering hypothesis (section 4), as functions, for any task whose tokens
form a grid or a set (image patches, video tubelets, point groups).

- `token_activations`: per-token activation maps (magnitude or frequency) at each stage around the frozen
  block: the trunk's output, after proj_in, the LLM layer's attention and FFN branches, after proj_out.
- `attention_maps`: CLS-to-token attention of the trunk's last block and of the LLM block, summed over heads.
- `pseudo_mask_iou`: the paper's localisation score: threshold a map into a pseudo-mask, keep the best
  threshold per image, IoU with the ground-truth mask on the token grid.
- `plot_activation_grid`, `miou_rows`, `write_miou_table`: the pictures and tables `hf-frozenlm analyze` writes.

Where the tokens are comes from the model's task (`Task.token_grid`, a `TokenGrid`); nothing here knows a trunk.
Hooks only read: they return nothing (so outputs are unchanged) and store detached copies (so no gradient
flows through them).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..tasks import TASKS
from ..tasks.base import TokenGrid
from .frozenlm_maps import MEASURES, minmax_per_image, token_frequency, token_magnitude  # noqa: F401

STAGES = ("trunk", "llm_in", "llm_attn", "llm_ffn", "llm_out")
KINDS = ("magnitude", "frequency")
DEFAULT_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))


# -- where a model keeps its tokens ------------------------------------------------------------------------
def task_of_model(model: nn.Module):
    """The task a model (a task head or its base model, possibly wrapped by peft) belongs to, by its config."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    for task in TASKS.values():
        if type(model.config) is task.model_class.config_class:
            return task
    raise TypeError(f"{type(model).__name__} is not a model of an hf_frozenlm task.")


def as_inputs(model: nn.Module, inputs) -> dict:
    """Model inputs as a dict on the model's device; a bare tensor is the model's main input (pixel_values, ...)."""
    if isinstance(inputs, torch.Tensor):
        inputs = {model.main_input_name: inputs}
    device = next(model.parameters()).device
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in inputs.items()
            if key != "labels"}


def token_grid(model: nn.Module, inputs) -> TokenGrid:
    """The `TokenGrid` of `model` (a task head or its base model) for `inputs`."""
    return task_of_model(model).token_grid(model, as_inputs(model, inputs))


# -- activation measures -----------------------------------------------------------------------------------
# The formulas live in frozenlm_maps (torch only), which the Space carries without hf_frozenlm installed.
ACTIVATION_MEASURES = MEASURES


# -- recording tokens with read-only hooks -----------------------------------------------------------------
def _first(output):
    """Attention modules return (output, weights); FFN modules return the output."""
    return output[0] if isinstance(output, tuple) else output


class TokenRecorder(contextlib.AbstractContextManager):
    """Records detached copies of the tokens at each stage while the model runs; removes its hooks on exit.

    Usable around any forward (training included): hooks return None, so outputs are untouched, and they
    store `.detach()`ed copies, so they add nothing to the autograd graph.
    """

    def __init__(self, grid: TokenGrid, stages: tuple[str, ...] | None = None, attention: bool = False):
        self.grid = grid
        self.stages = tuple(stages) if stages is not None else grid.stages()
        unknown = set(self.stages) - set(grid.stages())
        if unknown:
            raise ValueError(
                f"Stages {sorted(unknown)} do not exist for a block of variant {grid.block.variant!r}; "
                f"it has {grid.stages()}."
            )
        self.attention = attention
        self.tokens: dict[str, torch.Tensor] = {}  # stage -> (B, T, C)
        self.attention_weights: dict[str, torch.Tensor] = {}  # "trunk" / "llm" -> (B, heads, T, T)
        self._handles = []

    def _store(self, store: dict, key: str, value: torch.Tensor | None) -> None:
        if value is None:  # only attention weights can be missing
            raise RuntimeError(
                f"The {key!r} attention module returned no weights: it is not running the eager backend "
                "(attention_maps switches the model to eager; a recorder used directly needs it too)."
            )
        store[key] = value.detach().float().clone()

    def __enter__(self):
        block = self.grid.block
        try:
            if "trunk" in self.stages:
                # The block's input is the trunk's output, whatever the head: read it there.
                self._handles.append(block.register_forward_pre_hook(
                    lambda _m, args, kwargs: self._store(self.tokens, "trunk", args[0] if args else kwargs["hidden_states"]),
                    with_kwargs=True,
                ))
            outputs = {"llm_in": block.proj_in if hasattr(block, "proj_in") else None,
                       "llm_out": block.proj_out if hasattr(block, "proj_out") else None}
            if hasattr(block, "layers"):
                # With several LLM layers, the last one's branches are read: the block's final say.
                layer = block.layers[-1]
                outputs["llm_attn"] = getattr(layer, block.architecture.attention_module)
                outputs["llm_ffn"] = getattr(layer, block.architecture.ffn_module)
            for stage in self.stages:
                if stage == "trunk":
                    continue
                self._handles.append(outputs[stage].register_forward_hook(
                    lambda _m, _args, output, stage=stage: self._store(self.tokens, stage, _first(output))
                ))
            if self.attention:
                sources = {"trunk": self.grid.trunk_attention}
                if hasattr(block, "layers"):
                    sources["llm"] = getattr(block.layers[-1], block.architecture.attention_module)
                for name, module in sources.items():
                    if module is None:
                        continue
                    self._handles.append(module.register_forward_hook(
                        lambda _m, _args, output, name=name: self._store(self.attention_weights, name, output[1])
                    ))
        except BaseException:
            self._remove()
            raise
        return self

    def _remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __exit__(self, *exc):
        self._remove()
        return False


@contextlib.contextmanager
def _analysis_mode(model: nn.Module, eager_modules: tuple[nn.Module, ...] = ()):
    """Inference mode for the analysis (eval, no grad), optionally with eager attention; restored on exit.

    Eager is needed to get attention weights back (sdpa/flash do not return them). Each touched config's
    backend is recorded and put back exactly, so a model that ran sdpa runs sdpa again afterwards.
    """
    was_training = model.training
    configs = []
    if eager_modules:
        configs = [getattr(model, "config", None)] + [getattr(m, "config", None) for m in eager_modules]
        configs += [getattr(model.config, key, None) for key in getattr(type(model.config), "sub_configs", {})]
        configs = list({id(c): c for c in configs if c is not None}.values())
    saved = [(config, config._attn_implementation_internal) for config in configs]
    try:
        if eager_modules:
            modeling_logger = logging.getLogger("transformers.modeling_utils")
            level = modeling_logger.level
            # transformers warns that a sub-config has no sub-model of its own; the block's layers use it anyway.
            modeling_logger.setLevel(logging.ERROR)
            try:
                model.set_attn_implementation("eager")
            finally:
                modeling_logger.setLevel(level)
            for config in configs:  # modules whose config set_attn_implementation does not reach
                config._attn_implementation_internal = "eager"
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for config, implementation in saved:
            config._attn_implementation_internal = implementation
        model.train(was_training)


def token_activations(model: nn.Module, inputs, kind: str = "magnitude",
                      stages: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """Stage name -> (B, H, W) activation maps on the token grid, each scaled to [0, 1] per image, CLS excluded.

    kind: "magnitude" (L2 norm of token minus mean token) or "frequency" (L2 norm of FFT phase minus mean phase).
    Stages: "trunk", "llm_in", "llm_attn", "llm_ffn", "llm_out" for an LLM block; trunk/llm_in/llm_out for the
    MLP control; "trunk" only for the plain trunk (variant "none"). The model's mode and outputs are unchanged.
    """
    return token_activations_all(model, inputs, kinds=(kind,), stages=stages)[kind]


def token_activations_all(model: nn.Module, inputs, kinds=KINDS,
                          stages: tuple[str, ...] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Like `token_activations` for several kinds from one forward pass: kind -> stage -> (B, H, W)."""
    for kind in kinds:
        if kind not in ACTIVATION_MEASURES:
            raise ValueError(f"Unknown activation kind {kind!r}; kinds: {', '.join(ACTIVATION_MEASURES)}.")
    inputs = as_inputs(model, inputs)
    grid = token_grid(model, inputs)
    with _analysis_mode(model), TokenRecorder(grid, stages) as recorder:
        model(**inputs)
    maps = {}
    for kind in kinds:
        measure = ACTIVATION_MEASURES[kind]
        maps[kind] = {}
        for stage in recorder.stages:
            # CLS is left out before the mean is taken: the maps describe the image's tokens only.
            tokens = grid.grid_tokens(recorder.tokens[stage])  # (B, N, C)
            maps[kind][stage] = minmax_per_image(grid.to_grid(measure(tokens)).cpu())
    return maps


def pixel_activations(pixel_values: torch.Tensor, grid_shape: tuple[int, int], kinds=KINDS) -> dict[str, torch.Tensor]:
    """kind -> (B, H, W) maps of the raw input patches (each patch's pixels as its "channels").

    No model involved: the low-level reference a feature map must beat to show it has picked out the object
    rather than whatever differs most in colour.
    """
    batch, channels, height, width = pixel_values.shape
    patch_h, patch_w = height // grid_shape[0], width // grid_shape[1]
    patches = torch.nn.functional.unfold(pixel_values.float(), (patch_h, patch_w), stride=(patch_h, patch_w))
    tokens = patches.transpose(1, 2)  # (B, N, C * ph * pw), row-major like the patch embedding
    return {kind: minmax_per_image(ACTIVATION_MEASURES[kind](tokens).reshape(batch, *grid_shape)) for kind in kinds}


def attention_maps(model: nn.Module, inputs) -> dict[str, torch.Tensor]:
    """CLS-to-token attention, summed over heads, as (B, *grid) maps scaled to [0, 1] per example.

    Keys: "trunk" (the trunk's last block) and, when the model has an LLM block, "llm" (its last layer). A model
    without a CLS token (VideoMAE) gets the attention each token receives, averaged over all queries, instead.
    The model runs eager attention for this call (the only backend that returns weights), then its own again.
    """
    inputs = as_inputs(model, inputs)
    grid = token_grid(model, inputs)
    recorder = TokenRecorder(grid, stages=(), attention=True)
    eager_modules = [grid.trunk_attention] if grid.trunk_attention is not None else []
    if hasattr(grid.block, "layers"):
        eager_modules.append(getattr(grid.block.layers[-1], grid.block.architecture.attention_module))
    with _analysis_mode(model, tuple(eager_modules)), recorder:
        model(**inputs)
    maps = {}
    for name, weights in recorder.attention_weights.items():
        if grid.num_prefix_tokens:
            received = weights[:, :, 0, :].sum(dim=1)  # (B, T): what the first prefix token (CLS) reads, all heads
        else:
            received = weights.sum(dim=1).mean(dim=1)  # (B, T): the attention each token receives, all queries
        maps[name] = minmax_per_image(grid.to_grid(grid.grid_tokens(received)).cpu())
    return maps


# -- the localisation score --------------------------------------------------------------------------------
@dataclass
class PseudoMaskIoU:
    """Per-image IoU at each image's best threshold, those thresholds, and their mean (the mIoU).

    An image whose object covers no token of the grid cannot be scored: its IoU and threshold are NaN and
    it is left out of the mean (`scored` counts the images that were not).
    """

    per_image: np.ndarray  # (N,)
    best_threshold: np.ndarray  # (N,)
    mean: float
    scored: int


def masks_to_grid(masks, grid_shape: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) masks (bool, 0/1 or 0/255; non-zero = object) -> (N, H, W) bool on the token grid.

    A token is object when at least half of the pixels it covers are (area resampling), so the mask is
    downsampled the way a patch embedding sees the image.
    """
    masks = torch.as_tensor(np.asarray(masks)) if not isinstance(masks, torch.Tensor) else masks
    if masks.ndim == 2:
        masks = masks[None]
    foreground = (masks != 0).float()[:, None]  # (N, 1, h, w)
    coverage = torch.nn.functional.interpolate(foreground, size=tuple(grid_shape), mode="area")[:, 0]
    return coverage >= 0.5


def pseudo_mask_iou(maps, masks, thresholds=DEFAULT_THRESHOLDS) -> PseudoMaskIoU:
    """The paper's protocol: pseudo-mask = map > t for each t; keep each image's best t; IoU over tokens.

    maps: (N, H, W) in [0, 1]. masks: (N, h, w) at any resolution; resized to (H, W) by `masks_to_grid`.
    Ties between thresholds keep the lowest one. Images whose mask covers no token are not scored (NaN):
    a min-max scaled map always marks some token, so they would count as failures of the map when the
    grid is simply too coarse for the object.
    """
    maps = torch.as_tensor(np.asarray(maps)) if not isinstance(maps, torch.Tensor) else maps
    maps = maps.float().cpu()
    if maps.ndim == 2:
        maps = maps[None]
    truth = masks_to_grid(masks, tuple(maps.shape[1:]))
    if truth.shape[0] != maps.shape[0]:
        raise ValueError(f"{maps.shape[0]} maps but {truth.shape[0]} masks.")
    thresholds = torch.tensor(thresholds, dtype=maps.dtype)
    predicted = maps[None] > thresholds[:, None, None, None]  # (K, N, H, W)
    truth = truth[None]
    intersection = (predicted & truth).flatten(2).sum(-1).float()  # (K, N)
    union = (predicted | truth).flatten(2).sum(-1).float()
    iou = intersection / union.clamp(min=1)
    best = iou.argmax(dim=0)  # first maximum = lowest threshold among ties
    per_image = iou.gather(0, best[None])[0].double().numpy()
    best_threshold = thresholds[best].double().numpy()
    unscorable = ~truth[0].flatten(1).any(dim=1).numpy()
    per_image[unscorable] = np.nan
    best_threshold[unscorable] = np.nan
    scored = int((~unscorable).sum())
    mean = float(np.nanmean(per_image)) if scored else float("nan")
    return PseudoMaskIoU(per_image=per_image, best_threshold=best_threshold, mean=mean, scored=scored)


# -- tables and pictures -----------------------------------------------------------------------------------
def miou_rows(label: str, activation_maps: dict[str, dict[str, torch.Tensor]],
              cls_attention: dict[str, torch.Tensor], masks, thresholds=DEFAULT_THRESHOLDS) -> list[dict]:
    """Rows (model, stage, kind, miou, images scored) for one model: every stage x kind, then CLS attention."""
    rows = []
    for kind, by_stage in activation_maps.items():
        for stage, maps in by_stage.items():
            score = pseudo_mask_iou(maps, masks, thresholds)
            rows.append(dict(model=label, stage=stage, kind=kind, miou=score.mean, images=score.scored))
    for name, maps in cls_attention.items():
        score = pseudo_mask_iou(maps, masks, thresholds)
        rows.append(dict(model=label, stage=f"{name}_cls", kind="attention", miou=score.mean, images=score.scored))
    return rows


def reference_miou_rows(pixel_maps: dict[str, torch.Tensor], masks, seed: int = 0) -> list[dict]:
    """The two references every model's mIoU is read against: uniform noise (what a map that knows nothing scores
    under the best-threshold rule) and the raw input patches (the low-level cue the features should beat).
    pixel_maps: kind -> (N, H, W) maps of the input patches (`pixel_activations`)."""
    grid_shape = tuple(next(iter(pixel_maps.values())).shape[1:])
    noise = torch.rand(len(masks), *grid_shape, generator=torch.Generator().manual_seed(seed))
    rows = miou_rows(RANDOM_REFERENCE, {"-": {"uniform noise": noise}}, {}, masks)
    return rows + miou_rows(PIXEL_REFERENCE, {kind: {"patches": maps} for kind, maps in pixel_maps.items()}, {}, masks)


RANDOM_REFERENCE, PIXEL_REFERENCE = "random maps (chance)", "input pixels (no model)"


def write_miou_table(rows: list[dict], csv_path, markdown_path) -> str:
    """Write the rows as CSV and as a Markdown table; returns the Markdown."""
    import csv

    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["model", "stage", "kind", "miou", "images"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "miou": f"{row['miou']:.4f}"})
    lines = ["| model | stage | kind | mIoU | images scored |", "|---|---|---|---:|---:|"]
    lines += [f"| {r['model']} | {r['stage']} | {r['kind']} | {r['miou']:.3f} | {r['images']} |" for r in rows]
    markdown = "\n".join(lines) + "\n"
    with open(markdown_path, "w", encoding="utf-8") as handle:
        handle.write(markdown)
    return markdown


def plot_activation_grid(images, columns: dict[str, torch.Tensor], path, masks=None, title: str | None = None,
                         alpha: float = 0.55) -> None:
    """One row per image: the image, its mask (if given), then each column's map overlaid on the image.

    images: PIL images (shown as given). columns: title -> (N, H, W) maps in [0, 1].
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on these machines
    import matplotlib.pyplot as plt

    count = len(images)
    titles = ["image"] + (["mask"] if masks is not None else []) + list(columns)
    fig, axes = plt.subplots(count, len(titles), figsize=(1.35 * len(titles), 1.35 * count + 0.6), squeeze=False)
    for row, image in enumerate(images):
        pixels = np.asarray(image.convert("RGB"))
        extent = (0, pixels.shape[1], pixels.shape[0], 0)
        panels = [None] + ([np.asarray(masks[row])] if masks is not None else []) + [
            maps[row].numpy() for maps in columns.values()
        ]
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            if masks is not None and col == 1:  # the mask on its own: white = object
                ax.imshow(panel != 0, extent=extent, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(pixels, extent=extent)
            if panel is not None and not (masks is not None and col == 1):
                ax.imshow(panel, extent=extent, cmap="jet", vmin=0, vmax=1, alpha=alpha, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_set_maps(positions: torch.Tensor, columns: dict[str, torch.Tensor], path, title: str | None = None) -> None:
    """Maps over a set of tokens (point groups): one row per example, each column's values as the colour of its tokens
    drawn at their positions (x, y seen from above; the size grows with z for 3D positions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(next(iter(columns.values())))
    fig, axes = plt.subplots(count, len(columns), figsize=(1.6 * len(columns), 1.6 * count + 0.6), squeeze=False)
    for row in range(count):
        xyz = positions[row].float().cpu().numpy()
        size = 12 if xyz.shape[1] < 3 else 6 + 24 * (xyz[:, 2] - xyz[:, 2].min()) / (np.ptp(xyz[:, 2]) or 1.0)
        for col, (name, maps) in enumerate(columns.items()):
            ax = axes[row, col]
            ax.scatter(xyz[:, 0], xyz[:, 1], c=maps[row].float().cpu().numpy(), s=size, cmap="jet", vmin=0, vmax=1)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
