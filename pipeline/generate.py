"""Images, grids and videos from a trained generator.

    python -m pipeline.generate --model models:/stylegan3-emoji-t@champion --seeds 0-7 --outdir out/
    python -m pipeline.generate --model outputs/runs/demo/checkpoint_000001 --seeds 0-15 --grid out/grid.png
    python -m pipeline.generate --model net.safetensors --video interp --seeds 0-3 --frames 60 --outdir out/
    python -m pipeline.generate --model net.safetensors --video translate --seeds 0 --outdir out/
    python -m pipeline.generate --model net.safetensors --video rotate --seeds 0 --outdir out/

`--model` takes any network source (see pipeline.model_sources): a registered model URI, a checkpoint directory
(local or s3://), a network file, or an official NVIDIA pickle. The same seed gives the same pixels.
Videos: `interp` walks in W between consecutive seeds (looping), `translate` moves the image along a circle
through the generator's input transform, `rotate` turns it a full circle (StyleGAN3's equivariance shows as
texture that moves with the content instead of sticking to the pixel grid).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch


def parse_seeds(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--seeds {text!r}: use numbers and ranges like 0-7,12") from None
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds is empty")
    return seeds


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


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="network source: models:/NAME@ALIAS, models:/NAME/VERSION, a checkpoint directory, "
                        "a .safetensors network file or an official .pkl")
    p.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-7"),
                   help="latent seeds, e.g. 0-7,12 (default 0-7); one image per seed")
    p.add_argument("--psi", type=float, default=1.0, help="truncation psi: 1 = none, 0 = the average image")
    p.add_argument("--class", dest="class_idx", type=int, default=0,
                   help="class index for conditional models (ignored by unconditional ones)")
    p.add_argument("--outdir", default="out", help="directory for the images / video (created; default out/)")
    p.add_argument("--grid", default=None, help="also (or instead, with --no-images) save one grid PNG here")
    p.add_argument("--no-images", action="store_true", help="skip the per-seed PNG files")
    p.add_argument("--video", choices=["interp", "translate", "rotate"], default=None,
                   help="write a video instead of images: W interpolation between the seeds, a circular "
                        "translation, or a full rotation of the first seed")
    p.add_argument("--frames", type=int, default=120, help="video length in frames (default 120)")
    p.add_argument("--fps", type=int, default=30, help="video frame rate (default 30)")
    p.add_argument("--video-format", choices=["mp4", "gif"], default="mp4", help="video container (default mp4)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from pipeline.pixels import save_png, tile
    from pipeline.model_sources import SourceError, load_generator
    from pipeline.training.devices import local_device

    try:
        args.device, why = local_device(args.device)  # the rule of pipeline.training.devices
        G = load_generator(args.model, device=args.device)
    except (SourceError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"device: {args.device} ({why})", file=sys.stderr)  # after the model: a failed look-up prints one line
    if G.c_dim and not 0 <= args.class_idx < G.c_dim:
        print(f"error: --class {args.class_idx} is outside this model's {G.c_dim} classes", file=sys.stderr)
        return 2
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    if args.video:
        path = out / f"{args.video}-seed{args.seeds[0]}.{args.video_format}"
        from tqdm import tqdm

        frames = tqdm(video_frames(G, args.video, args.seeds, args.frames, args.psi, args.class_idx),
                      total=args.frames, desc=f"{args.video} video", unit="frame")
        n = write_video(frames, path, args.fps)
        print(f"wrote {path} ({n} frames at {args.fps} fps, {G.img_resolution}x{G.img_resolution})")
        return 0
    imgs = images_for_seeds(G, args.seeds, args.psi, args.class_idx)
    if not args.no_images:
        for seed, img in zip(args.seeds, imgs):
            save_png(img.permute(1, 2, 0).numpy(), out / f"seed{seed:04d}.png")
        print(f"wrote {len(args.seeds)} images to {out}/ (seed0000.png …)")
    if args.grid:
        Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
        save_png(tile(imgs), args.grid)
        print(f"wrote grid {args.grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
