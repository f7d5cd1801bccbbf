"""Images and videos from a generator: the library behind `python -m pipeline.generate` (and the tests).

The same seed gives the same pixels (latents from pipeline.pyfunc.seed_latents). Videos: `interp` walks in W between
consecutive seeds (looping), `translate` moves the image along a circle through the generator's input transform,
`rotate` turns it a full circle.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def _ws_for_seed(G, seed: int, psi: float, class_idx: int) -> torch.Tensor:
    from pipeline.pyfunc import seed_latents  # here: pipeline.pyfunc imports mlflow (seconds)

    z, c = seed_latents(G, seed, class_idx)
    return G.mapping(z, c, truncation_psi=psi)


@torch.no_grad()
def images_for_seeds(G, seeds: list[int], psi: float = 1.0, class_idx: int = 0) -> torch.Tensor:
    """uint8 [len(seeds), C, H, W]."""
    from pipeline.pixels import to_uint8
    from pipeline.pyfunc import generate_image

    return torch.cat([to_uint8(generate_image(G, s, psi, class_idx)) for s in seeds])


@torch.no_grad()
def video_frames(G, kind: str, seeds: list[int], frames: int, psi: float = 1.0, class_idx: int = 0,
                 radius: float = 0.1):
    """Yield uint8 [H, W, C] frames of an `interp`, `translate` or `rotate` video."""
    import models
    from pipeline.pixels import to_uint8

    if kind == "interp":
        ws = [_ws_for_seed(G, s, psi, class_idx) for s in seeds] if len(seeds) > 1 else \
            [_ws_for_seed(G, seeds[0], psi, class_idx), _ws_for_seed(G, seeds[0] + 1, psi, class_idx)]
        per = max(frames // len(ws), 1)
        for i, w0 in enumerate(ws):
            w1 = ws[(i + 1) % len(ws)]
            for f in range(per):
                t = (1 - math.cos(math.pi * f / per)) / 2  # ease in/out
                yield to_uint8(G.synthesis(torch.lerp(w0, w1, t)))[0].permute(1, 2, 0).numpy()
        return
    if kind not in ("translate", "rotate"):
        raise ValueError(f"unknown video kind {kind!r}: interp, translate or rotate")
    ws = _ws_for_seed(G, seeds[0], psi, class_idx)
    saved = G.synthesis.input.transform.clone()
    try:
        for f in range(frames):
            a = 2 * math.pi * f / frames
            if kind == "translate":
                models.set_input_transform(G, tx=radius * math.cos(a), ty=radius * math.sin(a))
            else:
                models.set_input_transform(G, angle=a)
            yield to_uint8(G.synthesis(ws))[0].permute(1, 2, 0).numpy()
    finally:
        G.synthesis.input.transform.copy_(saved)


def write_video(frames, path: str | Path, fps: int) -> int:
    """Encode frames as H.264 MP4 (or GIF when `path` ends in .gif); returns the frame count."""
    import imageio.v2 as imageio

    n = 0
    path = str(path)
    kwargs = {"fps": fps} if path.endswith(".gif") else {"fps": fps, "codec": "libx264", "quality": 8,
                                                         "macro_block_size": 1}
    with imageio.get_writer(path, **kwargs) as writer:
        for frame in frames:
            writer.append_data(np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame[:, :, :3])
            n += 1
    return n
