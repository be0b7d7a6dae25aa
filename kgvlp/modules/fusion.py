"""Fusion modules of the MLIP objectives: low-rank Tucker fusion and cross-attention blocks."""
from __future__ import annotations

from torch import Tensor, nn


class TuckerFusion(nn.Module):
    """n-way Tucker fusion with a low-rank core (MUTAN, Ben-younes et al. 2017):

    z = W_o Σ_{r=1..R} ∏_m (U_m^{(r)} x_m),

    each input x_m projected to R slices of width ``hidden``, multiplied elementwise across
    inputs, summed over the R slices (the rank-R core), then projected to ``out_dim``.
    Inputs broadcast over their leading dimensions.
    """

    def __init__(self, in_dims: list[int], out_dim: int, hidden: int = 256, rank: int = 8,
                 dropout: float = 0.0):
        super().__init__()
        self.rank, self.hidden = rank, hidden
        self.factors = nn.ModuleList(nn.Linear(d, hidden * rank) for d in in_dims)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden, out_dim)

    def forward(self, *inputs: Tensor) -> Tensor:
        if len(inputs) != len(self.factors):
            raise ValueError(f"TuckerFusion built for {len(self.factors)} inputs, got {len(inputs)}")
        product = None
        for factor, x in zip(self.factors, inputs):
            slices = self.dropout(factor(x)).unflatten(-1, (self.rank, self.hidden))
            product = slices if product is None else product * slices
        return self.output(product.sum(-2))


def cross_attention_stack(width: int, heads: int, layers: int, dropout: float = 0.0) -> nn.TransformerDecoder:
    """``layers`` × [self-attention, cross-attention, MLP] (pre-norm), batch first: the
    queries attend to each other and to a memory (ALBEF's fusion layers)."""
    layer = nn.TransformerDecoderLayer(width, heads, 4 * width, dropout=dropout, batch_first=True,
                                       norm_first=True)
    return nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(width))
