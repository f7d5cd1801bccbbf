"""Image sets as the metrics consume them: a tensor, or an iterable of batches (e.g. a data reader)."""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Union

import torch

ImageSource = Union[torch.Tensor, Iterable[torch.Tensor]]


def iter_batches(images: ImageSource, max_images: Optional[int] = None,
                 uint8_for: Optional[str] = None) -> Iterator[torch.Tensor]:
    """Batches [n, C, H, W] of `images` (a tensor, numpy array, or iterable of either), at most `max_images`
    images in all (None = all). `uint8_for`: the metric's name; when given, each batch must be uint8 NCHW."""
    batches = [images] if isinstance(images, torch.Tensor) or hasattr(images, "__array__") else images
    seen = 0
    for batch in batches:
        batch = torch.as_tensor(batch)
        if uint8_for is not None and (batch.dtype != torch.uint8 or batch.ndim != 4):
            raise ValueError(f"{uint8_for}: expected uint8 [N, C, H, W] images, got {batch.dtype} "
                             f"{list(batch.shape)}")
        if max_images is not None:
            batch = batch[:max_images - seen]
        if len(batch) == 0:
            break
        seen += len(batch)
        yield batch
        if max_images is not None and seen >= max_images:
            break
