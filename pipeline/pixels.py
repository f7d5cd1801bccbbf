"""Generator output as pixels: the uint8 conversion, image grids and PNG files (training grids, generation, the
dataset tool, tracking)."""

from __future__ import annotations

import io
import math
import os

import numpy as np
import torch


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """Generator output [N, C, H, W] float (≈[-1, 1]) -> uint8 [N, C, H, W] on the CPU.

    `·127.5 + 128`, clamp, truncate: the official conversion (docs/algorithm.md "Dataset format"), equal to rounding.
    """
    return (img.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu()


def tile(images: np.ndarray | torch.Tensor, cols: int | None = None) -> np.ndarray:
    """uint8 [N, C, H, W] -> one grid image uint8 [rows·H, cols·W, C] (empty cells black).

    cols: images per row; default the power of two ≥ sqrt(N), so grids of 8/16/32 look alike.
    """
    arr = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    n, c, h, w = arr.shape
    if cols is None:
        cols = 2 ** math.ceil(math.log2(math.sqrt(n))) if n > 1 else 1
    rows = math.ceil(n / cols)
    grid = np.zeros([rows * cols, c, h, w], dtype=np.uint8)
    grid[:n] = arr
    return grid.reshape(rows, cols, c, h, w).transpose(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c)


def to_pil(hwc: np.ndarray):
    """uint8 [H, W, C] with C in {1, 3, 4} -> PIL image (L, RGB or RGBA)."""
    from PIL import Image

    c = hwc.shape[2]
    if c not in (1, 3, 4):
        raise ValueError(f"cannot show an image with {c} channels (need 1, 3 or 4)")
    return Image.fromarray(hwc[:, :, 0] if c == 1 else hwc, {1: "L", 3: "RGB", 4: "RGBA"}[c])


def save_png(hwc: np.ndarray, path: str | os.PathLike) -> None:
    to_pil(hwc).save(path)


def png_bytes(hwc: np.ndarray) -> bytes:
    buf = io.BytesIO()
    to_pil(hwc).save(buf, format="PNG")
    return buf.getvalue()
