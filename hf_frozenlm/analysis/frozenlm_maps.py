"""Token activation maps (paper section 4) for the Space: one forward pass gives the logits and the maps.

Every trunk: `token_layout` reads from a model's config where its grid tokens sit (ViT patches, VideoMAE tubelets,
Point-BERT groups, ViLT patches), so one `run_with_maps` serves every task the Space shows.

Standalone on purpose: it imports only torch, so `push-space` can copy this file beside `spaces/app.py`
and the Space runs without hf_frozenlm installed. It finds the frozen block by its class name instead of
by class identity, so it works on models loaded through `trust_remote_code` (whose classes are fresh
copies of the modeling code) as well as on the package's own classes.

Stages: "trunk" (the trunk's output, the frozen block's input) and "block" (the frozen block's output,
after proj_out; `hf_frozenlm.analysis` calls it "llm_out"). A plain trunk has only "trunk".
Kinds: "magnitude" and "frequency", as the paper defines them; maps exclude prefix (CLS) tokens and are
min-max scaled to [0, 1] per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("magnitude", "frequency")
FROZEN_BLOCK_CLASS_NAME = "FrozenLMBlock"


def token_magnitude(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, C) -> (B, N): L2 norm over channels of each token minus the image's mean token."""
    tokens = tokens.float()
    return (tokens - tokens.mean(dim=1, keepdim=True)).norm(dim=-1)


def token_frequency(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, C) -> (B, N): L2 norm of each token's FFT phase (over channels) minus the image's mean phase."""
    phase = torch.fft.fft(tokens.float(), dim=-1).angle()  # (B, N, C), radians
    return (phase - phase.mean(dim=1, keepdim=True)).norm(dim=-1)


MEASURES = {"magnitude": token_magnitude, "frequency": token_frequency}


def minmax_per_image(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map (B, ...) to [0, 1]; a flat map (no token stands out) becomes zeros instead of 0/0."""
    flat = maps.reshape(maps.shape[0], -1).float()
    low = flat.min(dim=1, keepdim=True).values
    spread = flat.max(dim=1, keepdim=True).values - low
    safe_spread = torch.where(spread > 0, spread, torch.ones_like(spread))
    scaled = torch.where(spread > 0, (flat - low) / safe_spread, torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


def find_frozen_block(model: torch.nn.Module) -> torch.nn.Module | None:
    """The model's frozen LLM block, or None for a model without one (e.g. a plain ViT)."""
    for module in model.modules():
        if type(module).__name__ == FROZEN_BLOCK_CLASS_NAME:
            return module
    return None


def frozen_block_variant(model: torch.nn.Module) -> str | None:
    """"llm" (the paper), "mlp" (control), "none" (plain trunk), or None without a frozen block."""
    block = find_frozen_block(model)
    return None if block is None else getattr(block, "variant", "llm")


@dataclass
class TokenLayout:
    """Where the grid tokens sit in the frozen block's token stream and how they tile the input.

    num_prefix_tokens: tokens before the grid (CLS, a question's text); None = however many precede the grid.
    grid_shape: (H, W) image patches, (T, H, W) video tubelets or (G,) point groups, row-major.
    positions: for a set, each token's place in the input ((B, G, 3) point-group centres); None for grids.
    """

    num_prefix_tokens: int | None
    grid_shape: tuple[int, ...]
    positions: torch.Tensor | None = None

    @property
    def num_grid_tokens(self) -> int:
        count = 1
        for size in self.grid_shape:
            count *= int(size)
        return count

    def grid_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, C) block tokens -> (B, N, C): the grid's tokens only (prefix and trailing tokens dropped)."""
        prefix = tokens.shape[1] - self.num_grid_tokens if self.num_prefix_tokens is None else self.num_prefix_tokens
        grid = tokens[:, prefix:prefix + self.num_grid_tokens] if prefix >= 0 else tokens[:, :0]
        if grid.shape[1] != self.num_grid_tokens:
            raise ValueError(f"{tokens.shape[1]} tokens cannot hold a {self.grid_shape} grid after {prefix} prefix "
                             "token(s): the layout does not match this input.")
        return grid


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def token_grid_shape(config, pixel_values: torch.Tensor) -> tuple[int, int]:
    """(H, W) patches for this input, from the trunk's patch size (a ViT-style config or its vision_config)."""
    vision_config = getattr(config, "vision_config", None) or config
    patch = getattr(vision_config, "patch_size", None)
    if patch is None:
        raise ValueError(f"{type(config).__name__} has no patch_size: cannot lay its tokens out on a grid.")
    patch_h, patch_w = _pair(patch)
    height, width = pixel_values.shape[-2:]
    return height // patch_h, width // patch_w


def token_layout(model: torch.nn.Module, inputs: dict) -> TokenLayout | None:
    """The `TokenLayout` of a model of any hf_frozenlm trunk for `inputs`, read from its config alone (so it works on
    remote-code models); None for tokens that tile nothing (VectorNet's polylines).

    ViT: CLS then patches. VideoMAE: tubelets (time, height, width), no CLS. Point-BERT: CLS then point groups (a 3D
    question's tokens follow them), positioned at the group centres the model itself samples. ViLT: the text tokens,
    the image's CLS, then its patches (unpadded images only).
    """
    config = model.config
    vilt_config = getattr(config, "vilt_config", None)
    if vilt_config is not None:
        pixel_mask = inputs.get("pixel_mask")
        if pixel_mask is not None and not bool(pixel_mask.bool().all()):
            raise ValueError("The images of this batch are padded to a common size: their patches do not tile them.")
        patch_h, patch_w = _pair(vilt_config.patch_size)
        height, width = inputs["pixel_values"].shape[-2:]
        return TokenLayout(inputs["input_ids"].shape[1] + 1, (height // patch_h, width // patch_w))
    if getattr(config, "num_groups", None) is not None and "point_values" in inputs:
        embeddings = model.base_model.embeddings
        with torch.no_grad():
            _, centers = embeddings.group(inputs["point_values"].to(embeddings.group_projection.weight.dtype))
        return TokenLayout(1, (int(config.num_groups),), centers)
    vision_config = getattr(config, "vision_config", None)
    if vision_config is not None and getattr(vision_config, "tubelet_size", None) is not None:
        pixel_values = inputs["pixel_values"]  # (B, T, C, H, W)
        patch_h, patch_w = _pair(vision_config.patch_size)
        return TokenLayout(0, (pixel_values.shape[1] // vision_config.tubelet_size,
                               pixel_values.shape[-2] // patch_h, pixel_values.shape[-1] // patch_w))
    if "pixel_values" in inputs:
        return TokenLayout(None, token_grid_shape(config, inputs["pixel_values"]))
    return None


@torch.inference_mode()
def run_with_maps(model: torch.nn.Module, inputs: dict, kinds=KINDS):
    """Run `model(**inputs)` once; return (outputs, {kind: {stage: (B, *grid) maps in [0, 1]}}, TokenLayout or None).

    With a frozen block, hooks read its input (trunk) and output (block); they return nothing, so the outputs are
    the model's own. Without one, the last hidden state stands for the trunk's output. A model whose tokens tile
    nothing gives per-token maps of shape (B, T) over all its tokens.
    """
    block = find_frozen_block(model)
    recorded: dict[str, torch.Tensor] = {}
    handles = []
    if block is not None:
        def read_input(_module, args, kwargs):
            recorded["trunk"] = (args[0] if args else kwargs["hidden_states"]).detach()

        handles.append(block.register_forward_pre_hook(read_input, with_kwargs=True))
        if getattr(block, "variant", "llm") != "none":  # a "none" block passes its input through unchanged
            handles.append(block.register_forward_hook(
                lambda _m, _args, output: recorded.__setitem__("block", output.detach())
            ))
    try:
        outputs = model(**inputs, **({} if block is not None else {"output_hidden_states": True}))
    finally:
        for handle in handles:
            handle.remove()
    if block is None:
        recorded["trunk"] = outputs.hidden_states[-1]
    layout = token_layout(model, inputs)
    maps = {kind: {} for kind in kinds}
    for stage in ("trunk", "block"):
        if stage not in recorded:
            continue
        tokens = layout.grid_tokens(recorded[stage]) if layout is not None else recorded[stage]
        for kind in kinds:
            values = MEASURES[kind](tokens)  # (B, N)
            shape = layout.grid_shape if layout is not None else values.shape[1:]
            maps[kind][stage] = minmax_per_image(values.reshape(values.shape[0], *shape))
    return outputs, maps, layout


def predict_with_maps(model: torch.nn.Module, pixel_values: torch.Tensor, kinds=KINDS):
    """An image model on `pixel_values`: (logits (B, L), {kind: {stage: (B, H, W) maps in [0, 1]}})."""
    outputs, maps, _ = run_with_maps(model, {"pixel_values": pixel_values}, kinds)
    return outputs.logits, maps
