"""Per-parameter learning-rate scales: layer-wise decay over the trunk's depth (VideoMAE / BEiT fine-tuning) and a
separate rate for the block's two linear layers (Point-BERT's released code gives them half the learning rate).

Layer-wise decay numbers the trunk as its fine-tuning recipes do: the embeddings are layer 0, trunk block i is layer
i + 1, and everything after the trunk (the frozen block's linears, final norms, head) is the top, layer depth + 1;
a parameter of layer l trains at `decay ** (depth + 1 - l)` times the learning rate, so the head keeps the full rate
and the patch embedding the smallest.
"""

from __future__ import annotations

import re

from ..errors import UsageError

_TRUNK_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer)\.(\d+)\.")
_FROZEN_BLOCK = "frozen_lm."
_BLOCK_LINEARS = ("frozen_lm.proj_in.", "frozen_lm.proj_out.")


def trunk_layer_id(name: str, depth: int) -> int:
    """The layer-wise-decay layer of a parameter: 0 embeddings, i + 1 trunk block i, depth + 1 the rest."""
    if _FROZEN_BLOCK not in name:
        block = _TRUNK_BLOCK.search(name)
        if block:
            return int(block.group(1)) + 1
        if ".embeddings." in f".{name}":
            return 0
    return depth + 1


def trunk_depth(names: list[str]) -> int:
    """Number of trunk blocks among these parameter names (the frozen block's LLM layers are not the trunk's)."""
    blocks = [int(match.group(1)) for name in names if _FROZEN_BLOCK not in name
              and (match := _TRUNK_BLOCK.search(name))]
    return max(blocks) + 1 if blocks else 0


def learning_rate_scales(names: list[str], layer_decay: float | None = None,
                         block_linear_scale: float = 1.0) -> dict[str, float]:
    """name -> factor on the learning rate, for the trainable parameter `names` (canonical names)."""
    depth = trunk_depth(names)
    if layer_decay is not None and depth == 0:
        raise UsageError("--layer_decay needs a trunk of numbered blocks (ViT, VideoMAE, Point-BERT); this model has "
                         "none. Leave --layer_decay unset.")
    scales = {}
    for name in names:
        scale = layer_decay ** (depth + 1 - trunk_layer_id(name, depth)) if layer_decay is not None else 1.0
        if any(part in name for part in _BLOCK_LINEARS):
            scale *= block_linear_scale
        scales[name] = scale
    return scales


def split_param_groups_by_scale(optimizer, named_parameters, scales: dict[str, float]):
    """The (fresh, stepless) optimizer with its groups split by learning-rate scale (each group's lr multiplied by its
    scale; weight decay kept), so LambdaLR schedules every group from its own peak."""
    name_of = {id(parameter): name for name, parameter in named_parameters}
    groups = []
    for group in optimizer.param_groups:
        by_scale: dict[float, list] = {}
        for parameter in group["params"]:
            by_scale.setdefault(scales.get(name_of.get(id(parameter)), 1.0), []).append(parameter)
        for scale, parameters in sorted(by_scale.items()):
            groups.append({**group, "params": parameters, "lr": group["lr"] * scale, "lr_scale": scale})
    optimizer.param_groups.clear()
    for group in groups:
        optimizer.add_param_group(group)
    return optimizer
