"""Analysis: the paper's token-activation maps and localisation score (section 4), and the ablation study of its
controls (section 3). `frozenlm_maps` holds the map formulas with torch alone, so the Space can carry it."""

from .maps import (
    attention_maps,
    miou_rows,
    pixel_activations,
    plot_activation_grid,
    pseudo_mask_iou,
    token_activations,
    token_activations_all,
    token_grid,
)

__all__ = ["attention_maps", "miou_rows", "pixel_activations", "plot_activation_grid", "pseudo_mask_iou",
           "token_activations", "token_activations_all", "token_grid"]
