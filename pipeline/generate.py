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
import sys
from pathlib import Path

# The library (pipeline.sampling, model_sources) loads torch: imported in main, so that --help answers at once.


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
    from pipeline.model_sources import SourceError, load_generator
    from pipeline.pixels import save_png, tile
    from pipeline.sampling import images_for_seeds, video_frames, write_video
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
