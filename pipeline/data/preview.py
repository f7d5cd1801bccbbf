"""A look at a built shard set: its manifest summarised in lines (`describe`) and its first images as a grid PNG
(`save_grid`). What `python -m pipeline.dataset info` prints and draws."""

from __future__ import annotations

import io
import math
import tarfile

import numpy as np

from pipeline import storage
from pipeline.data.image_codec import decode_png_into
from pipeline.data.manifest import DatasetInfo, dataset_info, read_manifest
from pipeline.pixels import save_png, tile


def describe(uri: str) -> list[str]:
    """The manifest of the shard set at `uri` in a few lines: images, resolution, labels, shards, provenance, hash."""
    doc = read_manifest(uri)
    info = dataset_info(uri)
    lab = doc["labels"]
    labels = "none" if lab["kind"] == "none" else f"{lab['kind']}, c_dim {lab['dim']} (from {lab['source']})"
    if lab.get("names"):
        shown = ", ".join(lab["names"][:10]) + (", ..." if len(lab["names"]) > 10 else "")
        labels += f": {shown}"
    total_bytes = sum(s["bytes"] for s in doc["shards"])
    b = doc["build"]
    return [f"uri:        {uri}",
            f"images:     {doc['num_images']} ({doc['num_skipped']} skipped at build time)",
            f"resolution: {doc['resolution']}x{doc['resolution']}, {doc['channels']} channels",
            f"labels:     {labels}",
            f"shards:     {len(doc['shards'])} ({total_bytes / 2**20:.1f} MiB), "
            f"{min(s['count'] for s in doc['shards'])}-{max(s['count'] for s in doc['shards'])} images each",
            f"built from: {b['source']} (transform {b['transform']}, labels {b['labels']}) on {doc['created']} "
            f"by stylegan3-ray {doc['package_version']}",
            f"manifest sha256: {info.manifest_sha256}"]


def save_grid(info: DatasetInfo, out_path: str, count: int) -> int:
    """Save the first `count` images of the set as a near-square grid PNG; returns how many it holds."""
    res, ch = info.resolution, info.channels
    images = []
    for uri in info.shard_uris():
        with tarfile.open(fileobj=io.BytesIO(storage.read_bytes(uri))) as tar:
            for member in tar:
                if member.name.endswith(".png"):
                    arr = np.empty((res, res, ch), dtype=np.uint8)
                    decode_png_into(tar.extractfile(member).read(), arr)
                    images.append(arr)
                    if len(images) == count:
                        break
        if len(images) == count:
            break
    save_png(tile(np.stack(images).transpose(0, 3, 1, 2), cols=math.ceil(math.sqrt(len(images)))), out_path)
    return len(images)
