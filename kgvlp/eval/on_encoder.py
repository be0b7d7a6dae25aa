"""The base of every downstream model that sits on a pretrained image encoder."""
from __future__ import annotations

import torch
from torch import nn


class OnEncoder(nn.Module):
    """Holds ``encoder`` either frozen (no gradients, always in eval mode so BatchNorm and
    dropout stay as pretrained) or fine-tuned with the head; ``encoder_grad()`` is the grad
    context its forward should run the encoder under."""

    def __init__(self, encoder: nn.Module, finetune: bool):
        super().__init__()
        self.encoder, self.finetune = encoder, finetune
        encoder.requires_grad_(finetune)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.finetune:
            self.encoder.eval()
        return self

    def encoder_grad(self):
        return torch.set_grad_enabled(self.finetune and self.training)
