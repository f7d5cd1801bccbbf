"""Build and inspect training shard sets.

    python -m pipeline.dataset build ~/photos s3://my-bucket/photos-256 --resolution 256 --transform center-crop
    python -m pipeline.dataset build demo:emoji ./shards/emoji-64
    python -m pipeline.dataset info s3://my-bucket/photos-256 --grid photos.png

S3 endpoint and credentials come from the standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
Exit status: 0 done, 2 bad input or destination (one line on stderr says why), 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import os
import sys

from pipeline.data.errors import DataError


def _build(args: argparse.Namespace) -> None:
    from pipeline.data.build import BuildOptions, build, parse_resolution, summary_lines

    resolution = parse_resolution(args.resolution) if args.resolution else None
    channels = args.channels
    if args.src.startswith("demo:"):
        # The Twemoji PNGs are 72x72 RGBA: default to the nearest power of two, composited on white.
        resolution = resolution or (64, 64)
        channels = channels or 3
    opts = BuildOptions(resolution=resolution, transform=args.transform, channels=channels, labels=args.labels,
                        shard_size=args.shard_size, max_images=args.max_images,
                        workers=args.workers or os.cpu_count() or 1)
    result = build(args.src, args.dest, opts, progress=not args.quiet)
    for line in summary_lines(result):
        print(line)


def _info(args: argparse.Namespace) -> None:
    from pipeline.data.manifest import dataset_info
    from pipeline.data.preview import describe, save_grid

    print("\n".join(describe(args.uri)))
    if args.grid:
        n = save_grid(dataset_info(args.uri), args.grid, args.grid_images)
        print(f"grid of the first {n} images: {args.grid}")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.dataset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="turn images into webdataset shards + manifest.json",
                       description="Turn an image folder, a zip or the demo set into webdataset shards "
                                   "(train-NNNNNN.tar) with a manifest.json written last.")
    b.add_argument("src", metavar="SRC", help="image folder (recursive; labels from its dataset.json), a .zip of "
                   "images, demo:emoji (4,009 Twemoji PNGs, CC-BY 4.0) or demo:emoji-faces (its 100 smiley faces)")
    b.add_argument("dest", metavar="DEST", help="local directory or s3://bucket/prefix")
    b.add_argument("--resolution", metavar="R|WxH", help="output size in pixels, a power of two (default: the "
                   "first image's size; 64 for the demo sets); WxH with W>H only with --transform center-crop-wide")
    b.add_argument("--transform", choices=["none", "center-crop", "center-crop-wide"], default="none",
                   help="none: resize to the resolution (aspect not kept); center-crop: central square, then "
                   "resize; center-crop-wide: crop to WxH aspect, resize, centre on a black WxW canvas, drop "
                   "images that are too small (default: none)")
    b.add_argument("--channels", type=int, choices=[1, 3, 4],
                   help="1 grayscale, 3 RGB, 4 RGBA; alpha is composited on white when dropped (default: the "
                   "first image's; 3 for the demo sets). Other images are converted and the report counts them")
    b.add_argument("--labels", choices=["folders", "json", "none"],
                   help="folders: class = first subfolder name; json: SRC/dataset.json in the official format; "
                   "none: unlabelled (default: json when SRC has a dataset.json with labels, else none)")
    b.add_argument("--shard-size", type=int, default=1000, metavar="N", help="images per shard (default: 1000)")
    b.add_argument("--max-images", type=int, metavar="N", help="use only the first N source images (sorted)")
    b.add_argument("--workers", type=int, metavar="N", help="image-processing processes (default: CPU count)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_build)

    i = sub.add_parser("info", help="summarise a shard set; optionally save a grid of its images",
                       description="Print the manifest summary of a shard set.")
    i.add_argument("uri", metavar="URI", help="local directory or s3://bucket/prefix holding manifest.json")
    i.add_argument("--grid", metavar="OUT.png", help="save a grid of the first images to this PNG file")
    i.add_argument("--grid-images", type=int, default=64, metavar="N", help="images in the grid (default: 64)")
    i.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        args.func(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no manifest was written for an unfinished build; run the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
