"""Reading a shard set's manifest.json and checking it against what training asks for."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from pipeline import storage
from pipeline.data.build import FORMAT, MANIFEST_NAME
from pipeline.data.errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    """Summary of a built shard set. `resolution` in pixels (square), `channels` 1/3/4, `c_dim` the label
    width (0 when unlabelled), `num_images` images in all shards (before x-flip mirroring),
    `manifest_sha256` identifies the exact set (logged with a training run)."""

    uri: str
    resolution: int
    channels: int
    c_dim: int
    label_kind: str  # "none" | "class" | "vector"
    num_images: int
    manifest_sha256: str
    shards: tuple  # ((name, count), ...)
    # how often each label occurs in the set: ((label vector, count), ...); None when unlabelled or when the
    # manifest predates label counts (rebuild the set with `python -m pipeline.dataset build` to add them)
    label_counts: tuple | None = None

    def shard_uris(self) -> list[str]:
        return [storage.join(self.uri, name) for name, _ in self.shards]


def read_manifest(uri: str) -> dict:
    """The parsed manifest.json of the shard set at `uri` (local dir or s3://bucket/prefix).
    Raises DataError when it is missing (an incomplete or never-built set) or not ours."""
    doc, _ = _read(uri)
    return doc


def _read(uri: str) -> tuple[dict, bytes]:
    try:
        murl = storage.join(uri, MANIFEST_NAME)
        storage.check_credentials(uri)
        if not storage.exists(murl):
            raise DataError(f"{uri} has no {MANIFEST_NAME}: it is not a built shard set, or its build did not "
                            "finish (run `python -m pipeline.dataset build SRC " f"{uri}` again)")
        raw = storage.read_bytes(murl)
    except storage.StorageError as exc:
        raise DataError(str(exc)) from None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise DataError(f"{murl} is not valid JSON ({exc}); rebuild the set") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{murl} is not a {FORMAT} manifest (format={doc.get('format') if isinstance(doc, dict) else None!r})")
    return doc, raw


def dataset_info(uri: str) -> DatasetInfo:
    doc, raw = _read(uri)
    return DatasetInfo(
        uri=uri, resolution=int(doc["resolution"]), channels=int(doc["channels"]),
        c_dim=int(doc["labels"]["dim"]), label_kind=doc["labels"]["kind"], num_images=int(doc["num_images"]),
        manifest_sha256=hashlib.sha256(raw).hexdigest(),
        shards=tuple((s["name"], int(s["count"])) for s in doc["shards"]),
        label_counts=_label_counts(doc["labels"]),
    )


def _label_counts(labels: dict) -> tuple | None:
    dim, counts = int(labels.get("dim", 0)), labels.get("counts")
    if labels.get("kind") == "none" or counts is None:
        return None
    if labels["kind"] == "class":  # one-hot vectors, as the reader decodes .cls labels
        values = [tuple(1.0 if j == k else 0.0 for j in range(dim)) for k in range(dim)]
    else:
        values = [tuple(float(x) for x in v) for v in labels["values"]]
    return tuple((v, int(n)) for v, n in zip(values, counts) if int(n) > 0)


def label_distribution(info: DatasetInfo):
    """The set's labels as (values float32 [K, c_dim], counts int64 [K]) numpy arrays, the K distinct labels
    and how many images carry each; None when the manifest holds no counts (see DatasetInfo.label_counts)."""
    import numpy as np

    if not info.label_counts:
        return None
    values = np.array([v for v, _ in info.label_counts], dtype=np.float32).reshape(-1, info.c_dim)
    return values, np.array([n for _, n in info.label_counts], dtype=np.int64)


def check_info(info: DatasetInfo, resolution: int | None, channels: int | None, use_labels: bool) -> None:
    """Stop with a DataError when the set does not match what was asked for (None = accept the set's)."""
    if resolution is not None and resolution != info.resolution:
        raise DataError(f"{info.uri} holds {info.resolution}x{info.resolution} images but resolution "
                        f"{resolution} was requested: rebuild with --resolution {resolution} or train at "
                        f"{info.resolution}")
    if channels is not None and channels != info.channels:
        raise DataError(f"{info.uri} holds {info.channels}-channel images but {channels} channels were "
                        f"requested: rebuild with --channels {channels}")
    if use_labels and info.c_dim == 0:
        raise DataError(f"{info.uri} has no labels but conditional training (labels) was requested: rebuild "
                        "with --labels json or --labels folders, or train unconditionally")
