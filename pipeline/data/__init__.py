"""Image data sets: shard building (`python -m pipeline.dataset`), manifests, and the Ray Data reader.

Public API:
- build(src, dest, BuildOptions(...)) -> BuildResult
- read_manifest(uri) -> dict; dataset_info(uri) -> DatasetInfo; label_distribution(info) -> (values, counts)
- make_dataset(uri, resolution=None, channels=None, use_labels=False, mirror=False, seed=0, ...) -> ray.data.Dataset
- iter_batches_forever(source, batch_size, ...) and ImageStream(uri, batch_size, ...): endless batches;
  default_passes(num_shards): passes one Ray Data execution covers
- ensure_demo_shards(cache_dir, resolution, channels=3) -> uri
- DataError
"""

from pipeline.data.build import BuildOptions, BuildResult, build
from pipeline.data.demo import ensure_demo_shards
from pipeline.data.errors import DataError
from pipeline.data.manifest import DatasetInfo, dataset_info, label_distribution, read_manifest
from pipeline.data.reader import ImageStream, corrupt_counter, default_passes, iter_batches_forever, make_dataset

__all__ = [
    "BuildOptions", "BuildResult", "DataError", "DatasetInfo", "ImageStream", "build", "corrupt_counter",
    "dataset_info", "default_passes", "label_distribution", "ensure_demo_shards", "iter_batches_forever", "make_dataset", "read_manifest",
]
