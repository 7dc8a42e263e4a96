"""Token activation maps (paper section 4) for the Space: one forward pass gives the logits and the maps.

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


def token_grid_shape(config, pixel_values: torch.Tensor) -> tuple[int, int]:
    """(H, W) patches for this input, from the trunk's patch size (a ViT-style config or its vision_config)."""
    vision_config = getattr(config, "vision_config", None) or config
    patch = getattr(vision_config, "patch_size", None)
    if patch is None:
        raise ValueError(f"{type(config).__name__} has no patch_size: cannot lay its tokens out on a grid.")
    patch_h, patch_w = (patch, patch) if isinstance(patch, int) else tuple(patch)
    height, width = pixel_values.shape[-2:]
    return height // patch_h, width // patch_w


def _grid_tokens(tokens: torch.Tensor, grid_shape: tuple[int, int]) -> torch.Tensor:
    """(B, T, C) -> (B, N, C): drop the prefix (CLS, register) tokens, which precede the grid."""
    count = grid_shape[0] * grid_shape[1]
    prefix = tokens.shape[1] - count
    if prefix < 0:
        raise ValueError(f"{tokens.shape[1]} tokens cannot cover a {grid_shape[0]}x{grid_shape[1]} grid.")
    return tokens[:, prefix:]


@torch.inference_mode()
def predict_with_maps(model: torch.nn.Module, pixel_values: torch.Tensor, kinds=KINDS):
    """Run `model` once on `pixel_values`; return (logits (B, L), {kind: {stage: (B, H, W) maps in [0, 1]}}).

    With a frozen block, hooks read its input (trunk) and output (block); they return nothing, so the
    logits are the model's own. Without one, the last hidden state stands for the trunk's output.
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
        outputs = model(pixel_values=pixel_values, output_hidden_states=block is None)
    finally:
        for handle in handles:
            handle.remove()
    if block is None:
        recorded["trunk"] = outputs.hidden_states[-1]
    grid_shape = token_grid_shape(model.config, pixel_values)
    maps = {kind: {} for kind in kinds}
    for stage in ("trunk", "block"):
        if stage not in recorded:
            continue
        tokens = _grid_tokens(recorded[stage], grid_shape)
        for kind in kinds:
            values = MEASURES[kind](tokens)  # (B, N)
            maps[kind][stage] = minmax_per_image(values.reshape(values.shape[0], *grid_shape))
    return outputs.logits, maps
