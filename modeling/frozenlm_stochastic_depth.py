"""Stochastic depth (drop path, Huang et al. 2016) for every trunk, as DeiT and timm train ViTs.

Each residual branch of block i is dropped for whole samples with probability `rate * i / (depth - 1)` (timm's linear
schedule over depth) and the kept samples are rescaled by 1 / (1 - p), so the expected output is unchanged and
evaluation is the identity. transformers' ViT and VideoMAE layers have no drop path: `add_stochastic_depth` puts it
into the dropout each residual branch already ends with, so the layers keep their code and weight names.

Hub-portable: imports only torch (copied beside every saved model).
"""

from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop a residual branch for whole samples, rescaling the kept ones."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - rate)
    return x * keep / (1.0 - rate)


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """The per-block rates of timm's linear schedule: 0 for the first block, `rate` for the last."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path_rate={rate}: pass a probability in [0, 1), e.g. 0.1 for ViT-S (DeiT).")
    return torch.linspace(0, rate, depth).tolist() if depth > 1 else [float(rate)] * depth


class DropoutThenDropPath(nn.Dropout):
    """The dropout a residual branch ends with, followed by drop path on the branch (no weights: state dicts and
    loading are unchanged)."""

    def __init__(self, p: float, drop_path_rate: float):
        super().__init__(p)
        self.drop_path_rate = float(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(super().forward(x), self.drop_path_rate, self.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, drop_path_rate={self.drop_path_rate:.4f}"


def add_stochastic_depth(layers, rate: float, branch_dropouts: tuple[str, ...]) -> None:
    """Give every layer drop path on its residual branches, at the linear-schedule rate of its depth.

    branch_dropouts: dotted paths, inside a layer, of the dropout modules applied to a residual branch just before
    it is added back (ViT: "dropout", used by both branches; VideoMAE: "attention.output.dropout", "output.dropout").
    Calling it again sets new rates (rate 0 leaves plain dropouts).
    """
    for layer, layer_rate in zip(layers, drop_path_rates(rate, len(layers))):
        for path in branch_dropouts:
            parent_path, _, name = path.rpartition(".")
            parent = layer.get_submodule(parent_path) if parent_path else layer
            dropout = getattr(parent, name)
            if not isinstance(dropout, nn.Dropout):
                raise TypeError(f"{type(layer).__name__}.{path} is a {type(dropout).__name__}, not the dropout that "
                                "ends a residual branch: this transformers version laid the layer out differently.")
            replacement = DropoutThenDropPath(dropout.p, layer_rate) if layer_rate > 0 else nn.Dropout(dropout.p)
            setattr(parent, name, replacement)
