"""Training-time augmentation (never part of an exported graph)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_shift(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by up to `max_shift` pixels in x and y, filling with zeros."""
    if max_shift <= 0:
        return images
    count, _, height, width = images.shape
    span = 2 * max_shift + 1
    padded = F.pad(images, (max_shift, max_shift, max_shift, max_shift))
    offsets = torch.randint(0, span * span, (count,), generator=generator)
    shifted = torch.empty_like(images)
    for offset in torch.unique(offsets).tolist():
        chosen = offsets == offset
        top, left = divmod(offset, span)
        shifted[chosen] = padded[chosen, :, top : top + height, left : left + width]
    return shifted


def shift_for(size: int) -> int:
    """About 7% of the side: 2 pixels at 28x28 and 32x32."""
    return max(1, round(size / 14))
