"""The reference for the training-step benchmark: ViT + frozen LLaMA block computed the way the official code does.

Written for the benchmark (not copied): a DeiT-style ViT whose attention is hand-written (q @ k^T, softmax, @ v;
no fused kernel), the LLaMA-1 block as Meta's reference implementation computes it (RMSNorm in fp32, eager
attention with an fp32 softmax, SwiGLU FFN; here with no rotary and no causal mask, as the paper), a weight-1
RMSNorm after it, and everything in float32. Data flow: patch embed -> CLS + positions -> ViT blocks -> proj_in ->
LLaMA block -> unit RMSNorm -> proj_out -> final LayerNorm -> CLS -> head.

`copy_from_ours` copies the weights of an `hf_frozenlm` ViTLlamaForImageClassification in, so the benchmark can
check that both compute the same function before timing them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class EagerViTAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # (B, T, C)
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, hd)
        attn = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5  # (B, H, T, T)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, c))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EagerViTAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class MetaRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class MetaLlamaBlock(nn.Module):
    """One LLaMA-1 block as Meta's reference code computes it, minus rotary and causal mask."""

    def __init__(self, dim: int, heads: int, ffn: int, eps: float = 1e-6):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.attention_norm, self.ffn_norm = MetaRMSNorm(dim, eps), MetaRMSNorm(dim, eps)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.w1, self.w2, self.w3 = nn.Linear(dim, ffn, bias=False), nn.Linear(ffn, dim, bias=False), nn.Linear(dim, ffn, bias=False)

    def attention(self, x):  # (B, T, D)
        b, t, _ = x.shape
        q, k, v = (w(x).view(b, t, self.heads, self.head_dim).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)  # (B, H, T, T)
        scores = F.softmax(scores.float(), dim=-1).type_as(q)
        return self.wo(torch.matmul(scores, v).transpose(1, 2).contiguous().view(b, t, -1))

    def forward(self, x):
        h = x + self.attention(self.attention_norm(x))
        return h + self.w2(F.silu(self.w1(self.ffn_norm(h))) * self.w3(self.ffn_norm(h)))


class ReferenceViTLlama(nn.Module):
    def __init__(self, dim=384, depth=12, heads=6, image_size=224, patch=16, num_classes=1000,
                 llm_dim=4096, llm_heads=32, llm_ffn=11008):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + (image_size // patch) ** 2, dim) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads) for _ in range(depth))
        self.llm_proj_in = nn.Linear(dim, llm_dim, bias=False)
        self.llm = MetaLlamaBlock(llm_dim, llm_heads, llm_ffn)
        self.llm_norm = MetaRMSNorm(llm_dim)  # never loaded: weight stays 1
        self.llm_proj_out = nn.Linear(llm_dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        for p in [*self.llm.parameters(), *self.llm_norm.parameters()]:
            p.requires_grad_(False)  # frozen, and kept out of the optimizer

    def forward(self, pixel_values):
        x = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)  # (B, N, C)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.llm_proj_out(self.llm_norm(self.llm(self.llm_proj_in(x)).float()))
        return self.head(self.norm(x)[:, 0])

    @torch.no_grad()
    def copy_from_ours(self, model) -> None:
        """Copy the weights of an hf_frozenlm ViTLlamaForImageClassification (same sizes) into this module."""
        vit, block = model.vit_llama.vit, model.vit_llama.frozen_lm
        self.patch_embed.weight.copy_(vit.embeddings.patch_embeddings.projection.weight)
        self.patch_embed.bias.copy_(vit.embeddings.patch_embeddings.projection.bias)
        self.cls_token.copy_(vit.embeddings.cls_token)
        self.pos_embed.copy_(vit.embeddings.position_embeddings)
        for ours, ref in zip(vit.layers, self.blocks):
            a = ours.attention
            ref.attn.qkv.weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
            ref.attn.qkv.bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
            ref.attn.proj.load_state_dict(a.o_proj.state_dict())
            ref.norm1.load_state_dict(ours.layernorm_before.state_dict())
            ref.norm2.load_state_dict(ours.layernorm_after.state_dict())
            ref.fc1.load_state_dict(ours.mlp.fc1.state_dict())
            ref.fc2.load_state_dict(ours.mlp.fc2.state_dict())
        layer = block.layers[0]
        pairs = [(self.llm.wq, layer.self_attn.q_proj), (self.llm.wk, layer.self_attn.k_proj),
                 (self.llm.wv, layer.self_attn.v_proj), (self.llm.wo, layer.self_attn.o_proj),
                 (self.llm.w1, layer.mlp.gate_proj), (self.llm.w3, layer.mlp.up_proj),
                 (self.llm.w2, layer.mlp.down_proj), (self.llm.attention_norm, layer.input_layernorm),
                 (self.llm.ffn_norm, layer.post_attention_layernorm)]
        for ref, ours in pairs:
            ref.weight.copy_(ours.weight.float())
        self.llm_proj_in.weight.copy_(block.proj_in.weight)
        self.llm_proj_out.weight.copy_(block.proj_out.weight)
        self.norm.load_state_dict(vit.layernorm.state_dict())
        self.head.load_state_dict(model.classifier.state_dict())
