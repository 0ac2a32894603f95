"""A decoder-only transformer language model (GPT-style), for sequence datasets of token ids."""

import math

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from engine.models import Model
from engine.registry import Params


class TransformerParams(Params):
    layers: int = Field(2, ge=1, le=96, description="transformer blocks")
    heads: int = Field(2, ge=1, le=128, description="attention heads; width must be a multiple of it")
    width: int = Field(64, ge=1, le=16384, description="embedding width (d_model)")
    mlp_ratio: int = Field(4, ge=1, le=16, description="hidden width of each block's MLP, in multiples of width")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "TransformerParams":
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be a multiple of heads {self.heads}")
        return self


class _Block(nn.Module):
    def __init__(self, params: TransformerParams) -> None:
        super().__init__()
        width = params.width
        self.heads = params.heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, params.mlp_ratio * width), nn.Linear(params.mlp_ratio * width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, t, width = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(n, t, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(attended.transpose(1, 2).reshape(n, t, width))
        return h + self.fc2(F.gelu(self.fc1(self.norm2(h))))


class _GPT(nn.Module):
    def __init__(self, params: TransformerParams, context: int, vocab: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, params.width)
        self.positions = nn.Embedding(context, params.width)
        self.blocks = nn.ModuleList(_Block(params) for _ in range(params.layers))
        self.norm = nn.LayerNorm(params.width)
        # GPT-2's initialisation: N(0, 0.02), the residual projections scaled down by the depth
        for name, parameter in self.named_parameters():
            if name.endswith("weight") and parameter.dim() == 2:
                std = 0.02 / math.sqrt(2 * params.layers) if name.endswith(("proj.weight", "fc2.weight")) else 0.02
                nn.init.normal_(parameter, 0.0, std)
            elif name.endswith("bias") and ".norm" not in name:
                nn.init.zeros_(parameter)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tokens(tokens) + self.positions.weight[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.norm(h) @ self.tokens.weight.T  # tied: the output layer is the token embedding


class Transformer(Model[TransformerParams]):
    name = "transformer"
    description = (
        "Decoder-only transformer language model (GPT-style): learned positions, pre-norm blocks of causal "
        "multi-head attention (torch's scaled_dot_product_attention) and a GELU MLP, tied input/output "
        "embeddings; takes (N, T) token ids, outputs (N, T, vocab) logits. The context length is the dataset's."
    )
    Params = TransformerParams
    input_ranks = frozenset({1})
    takes_tokens = True
    size_param = "width"
    vmap_safe = False  # tied weights and fused attention: trained one run at a time
    test_problem = {
        "params": {"layers": 1, "heads": 2, "width": 16},
        "dataset": {"name": "modular_arithmetic", "params": {"p": 11}},
        "loss": "token_cross_entropy",
    }

    @classmethod
    def build(cls, params: TransformerParams, input_shape, n_outputs) -> nn.Module:
        return _GPT(params, input_shape[0], n_outputs)

    @classmethod
    def parameter_count(cls, params: TransformerParams, input_shape, n_outputs) -> int:
        width, hidden = params.width, params.mlp_ratio * params.width
        block = 2 * 2 * width + (3 * width * width + 3 * width) + (width * width + width)
        block += (width * hidden + hidden) + (hidden * width + width)
        return (n_outputs + input_shape[0]) * width + params.layers * block + 2 * width

    @classmethod
    def activation_count(cls, params: TransformerParams, input_shape, n_outputs) -> int:
        """Per sequence: each block's norms, q/k/v, attention output and residuals (about 8 T x width), its
        MLP (2 x mlp_ratio T x width) and, where attention runs unfused, its T x T scores and weights per head;
        then the logits and their softmax."""
        t, width = input_shape[0], params.width
        block = (8 + 2 * params.mlp_ratio) * t * width + 2 * params.heads * t * t
        return params.layers * block + 2 * t * width + 2 * t * n_outputs
