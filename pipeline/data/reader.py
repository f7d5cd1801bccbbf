"""Streaming training images from shards with Ray Data.

    ray.data.read_webdataset(shard paths, decoder=None)   raw bytes per sample: png, cls/json, __key__, __url__
      -> map_batches(_decode_batch)                     our PNG decode: {"img": uint8 [N,C,H,W], "c": float32 [N,c_dim]}
      -> iter_torch_batches(local shuffle buffer)       in the consumer

Never the default webdataset decoder and never pickle: only PNG, integer text (.cls) and JSON number lists
(.json) are ever parsed. Reading and decoding fuse into one task per shard (same `num_cpus`), so raw bytes
never travel through the object store.

Time is counted in images, not epochs: `iter_batches_forever` / `ImageStream` read the set over and over, with a
new shard order for every pass, and carry a partial batch over to the next read, so every batch is full. One
Ray Data execution covers several passes when the set has few shards (`default_passes`): an execution
costs seconds to start on a small node, which would otherwise dominate a small set's passes (bench/data.py).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Callable, Iterator

import numpy as np

from pipeline import storage
from pipeline.data.errors import DataError
from pipeline.data.image_codec import decode_png_into
from pipeline.data.manifest import DatasetInfo, check_info, dataset_info

# Ray Data CPU reservation per read+decode task: four fit on one core, so Ray Train workers (which hold
# whole or half CPUs) never starve the input pipeline on a small node (docs/platform.md "CPU starvation").
DATA_NUM_CPUS = 0.25
# Distinct corrupt samples tolerated by default (`corrupt_budget`): 1% of the set, at least one sample.
DEFAULT_MAX_CORRUPT = 0.01
# An execution reads at least this many shards (more passes per execution for sets with fewer shards) ...
MIN_SHARDS_PER_EXECUTION = 256
# ... and covers at most this many passes.
MAX_PASSES_PER_EXECUTION = 256


def default_passes(num_shards: int) -> int:
    """How many passes over a set of `num_shards` shards one Ray Data execution should cover: enough to read
    at least MIN_SHARDS_PER_EXECUTION shards (1 for sets with that many), at most MAX_PASSES_PER_EXECUTION."""
    return max(1, min(MAX_PASSES_PER_EXECUTION, -(-MIN_SHARDS_PER_EXECUTION // max(1, num_shards))))


def default_concurrency() -> int:
    """Read+decode tasks that run at once: two per CPU of the Ray cluster. Two keep every core busy across
    task boundaries; many more only add Ray worker processes (each imports pyarrow and pandas on start). On
    the 2-core box (bench/data.py, 64x64): 2 tasks 3.2k img/s, 4 tasks 4.3-4.6k, no limit (8 at 0.25 CPU,
    new workers every execution) ~1.5k."""
    import ray

    return max(1, 2 * int(ray.cluster_resources().get("CPU", 1)))


def corrupt_budget(max_corrupt: float, num_images: int) -> int:
    """Distinct corrupt samples a run tolerates (`--max-corrupt`): 0 = none; a value in (0, 1) is a fraction of
    the set's `num_images`, never less than one sample (one bad image never stops a run); 1 or more is a
    count."""
    if max_corrupt < 0:
        raise ValueError(f"max_corrupt must be >= 0, got {max_corrupt}")
    if max_corrupt == 0:
        return 0
    if max_corrupt < 1:
        return max(1, int(max_corrupt * num_images))
    return int(max_corrupt)


@functools.lru_cache(maxsize=None)
def _counter_class():
    import ray

    @ray.remote(num_cpus=0)
    class CorruptSamples:
        """The distinct corrupt samples of one run, (shard, key) -> reason, shared by every decode task (an
        actor: tasks run anywhere). A sample is counted once however many passes read it; decode tasks ask for
        the known ones first and skip them undecoded. Once more than `budget` are known it stays tripped: every
        later decode task raises the same DataError (a restarted worker cannot read on past it)."""

        def __init__(self, budget: int, what: str):
            self.budget, self.what = budget, what
            self.samples: dict[tuple[str, str], str] = {}  # insertion order = order found
            self.error: str | None = None

        def configure(self, budget: int, what: str, samples: list) -> int:
            """Set the budget and add samples known from a checkpoint (resume); returns the count."""
            self.budget, self.what = int(budget), what
            for s in samples:
                self.samples.setdefault((str(s["shard"]), str(s["key"])), str(s.get("reason", "")))
            self._check(None)
            return len(self.samples)

        def known(self, shards: list) -> tuple:
            """(keys known to be corrupt in each of `shards`, the budget error or None)."""
            wanted = set(shards)
            out: dict[str, list[str]] = {sh: [] for sh in shards}
            for sh, key in self.samples:
                if sh in wanted:
                    out[sh].append(key)
            return out, self.error

        def add(self, found: list) -> str | None:
            """Record [(shard, key, reason)]; returns the budget error (a message) or None."""
            latest = None
            for shard, key, reason in found:
                if (shard, key) not in self.samples:
                    self.samples[(shard, key)] = reason
                    latest = (shard, key, reason)
            self._check(latest)
            return self.error

        def _check(self, latest) -> None:
            if self.error is not None or len(self.samples) <= self.budget:
                return
            by_shard: dict[str, int] = {}
            for sh, _ in self.samples:
                by_shard[sh] = by_shard.get(sh, 0) + 1
            worst = sorted(by_shard.items(), key=lambda kv: (-kv[1], kv[0]))
            shards = ", ".join(f"{sh} ({n})" for sh, n in worst[:5]) + (
                f" and {len(worst) - 5} more" if len(worst) > 5 else "")
            last = f"; the latest is {latest[1]} in {latest[0]} ({latest[2]})" if latest else ""
            self.error = (f"{len(self.samples)} distinct corrupt samples, more than the budget of {self.budget} "
                          f"({self.what}); in shards {shards}{last}: rebuild the shard set "
                          f"(python -m pipeline.dataset) or raise --max-corrupt")

        def count(self) -> int:
            return len(self.samples)

        def report(self) -> list:
            """[{"shard", "key", "reason"}] in the order found."""
            return [{"shard": sh, "key": key, "reason": r} for (sh, key), r in self.samples.items()]

    return CorruptSamples


def budget_text(max_corrupt: float, num_images: int) -> str:
    """How a budget came about, for the error message."""
    if 0 < max_corrupt < 1:
        return f"--max-corrupt {max_corrupt:g} of {num_images} images"
    return f"--max-corrupt {max_corrupt:g}"


def corrupt_counter(max_corrupt: float = DEFAULT_MAX_CORRUPT, num_images: int = 0):
    """A new corrupt-sample actor for `make_dataset(counter=...)` with the budget of `corrupt_budget`;
    `ray.get(counter.count.remote())` is the number of distinct corrupt samples, `counter.report.remote()` the
    samples. Once more than the budget are known, decoding raises a DataError naming the shards."""
    return _counter_class().remote(corrupt_budget(max_corrupt, num_images), budget_text(max_corrupt, num_images))


def _decode_batch(batch: dict[str, np.ndarray], *, resolution: int, channels: int, label_kind: str,
                  c_dim: int, use_labels: bool, mirror: bool, counter) -> dict[str, np.ndarray]:
    """Decode one batch of raw webdataset rows into {"img": uint8 [N, C, H, W], "c": float32 [N, c_dim]}.

    Samples already known to `counter` as corrupt are dropped undecoded; samples whose PNG or label cannot be
    parsed are dropped and reported to it (each (shard, key) is counted once per run). With `mirror` every
    image is emitted twice, as is and x-flipped (docs/algorithm.md "Dataset format": --mirror doubles the data set)."""
    import ray

    pngs = batch["png"] if "png" in batch else np.empty(0, dtype=object)
    keys, urls = batch["__key__"], batch["__url__"]
    n = len(keys)
    known, error = ray.get(counter.known.remote(sorted({str(u) for u in urls})))
    if error is not None:
        raise DataError(error)
    skip = {(sh, k) for sh, ks in known.items() for k in ks}
    hwc = np.empty((n, resolution, resolution, channels), dtype=np.uint8)
    out_c = np.zeros((n, c_dim if use_labels else 0), dtype=np.float32)
    ok = np.ones(n, dtype=bool)
    found = []
    for i in range(n):
        if skip and (str(urls[i]), str(keys[i])) in skip:
            ok[i] = False
            continue
        try:
            data = pngs[i] if len(pngs) else None
            if data is None or (isinstance(data, float) and np.isnan(data)):
                raise ValueError("sample has no .png member")
            decode_png_into(data, hwc[i])
            if use_labels:
                if label_kind == "class":
                    k = int(bytes(batch["cls"][i]).decode())
                    if not 0 <= k < c_dim:
                        raise ValueError(f"class {k} outside [0, {c_dim})")
                    out_c[i, k] = 1.0  # one-hot, as the official loader (docs/algorithm.md "Dataset format")
                else:
                    vec = json.loads(bytes(batch["json"][i]))
                    out_c[i] = np.asarray(vec, dtype=np.float32).reshape(c_dim)
        except Exception as exc:  # noqa: BLE001 - any unparsable sample is corrupt, counted below
            ok[i] = False
            reason = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", f"{type(exc).__name__}: {exc}")
            found.append((str(urls[i]), str(keys[i]), reason[:300]))
    if found:
        error = ray.get(counter.add.remote(found))
        if error is not None:
            raise DataError(error)
    if not ok.all():
        hwc, out_c = hwc[ok], out_c[ok]
    img = np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))
    if mirror:
        img = np.concatenate([img, img[:, :, :, ::-1]])
        out_c = np.concatenate([out_c, out_c])
    return {"img": img, "c": out_c}


def make_dataset(uri: str, resolution: int | None = None, channels: int | None = None, use_labels: bool = False,
                 mirror: bool = False, seed: int = 0, *, epoch: int = 0, passes: int = 1, rank: int = 0,
                 world_size: int = 1, counter=None, max_corrupt: float = DEFAULT_MAX_CORRUPT,
                 info: DatasetInfo | None = None, concurrency: int | None = None):
    """`passes` passes (default one) over the shard set at `uri` as one `ray.data.Dataset` whose batches are
    {"img": uint8 [N, C, H, W], "c": float32 [N, c_dim]} (c_dim 0 when `use_labels` is False).

    The manifest is checked against `resolution`/`channels`/`use_labels` (None = take the set's) and a
    mismatch raises DataError. Pass `epoch + j` visits the shards in an order drawn from (seed, epoch + j);
    with `world_size` > 1, rank r reads every world_size-th shard of each pass's order. At most `concurrency`
    read+decode tasks run at once (default: `default_concurrency()`). `counter` (see `corrupt_counter`)
    collects the distinct corrupt samples; one with the budget of `max_corrupt` (see `corrupt_budget`) is made
    when None (a caller that wants to read the count makes its own and passes it here)."""
    import ray

    info = info or dataset_info(uri)
    check_info(info, resolution, channels, use_labels)
    if world_size > len(info.shards):
        raise DataError(f"{uri} has {len(info.shards)} shards, fewer than the {world_size} data readers: rebuild "
                        f"with a --shard-size of at most {info.num_images // world_size}")
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    fs, root = storage.pyarrow_fs(uri)
    paths = []
    for j in range(passes):
        order = np.random.default_rng([seed, epoch + j]).permutation(len(info.shards))
        paths += [f"{root}/{info.shards[i][0]}" for i in order[rank::world_size]]
    remote_args: dict[str, Any] = {}
    if storage.is_s3(uri):
        remote_args["runtime_env"] = {"env_vars": storage.aws_env()}
    if counter is None:
        counter = corrupt_counter(max_corrupt, info.num_images)
    concurrency = min(concurrency or default_concurrency(), len(paths))
    # One read task per shard and no block splitting, so Ray fuses read and decode into one task (same
    # num_cpus and concurrency on both).
    ds = ray.data.read_webdataset(paths, filesystem=fs, decoder=None, num_cpus=DATA_NUM_CPUS,
                                  override_num_blocks=len(paths), concurrency=concurrency, **remote_args)
    ds = ds.map_batches(
        _decode_batch, batch_format="numpy", batch_size=None, zero_copy_batch=True, num_cpus=DATA_NUM_CPUS,
        compute=ray.data.TaskPoolStrategy(size=concurrency),
        fn_kwargs=dict(resolution=info.resolution, channels=info.channels, label_kind=info.label_kind,
                       c_dim=info.c_dim, use_labels=use_labels, mirror=mirror, counter=counter),
        **remote_args,
    )
    return ds


def _unwrap_data_error(exc: BaseException) -> DataError | None:
    """Ray wraps an error raised inside a decode task (RayTaskError(UserCodeException)) and keeps only the
    remote traceback text of the original: find our DataError in the chain, or else in that text."""
    seen, current = set(), exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DataError):
            return current
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else (current.__cause__ or current.__context__)
    marker = f"{DataError.__module__}.{DataError.__name__}: "
    text = str(exc)
    if marker in text:
        return DataError(text.split(marker, 1)[1].splitlines()[0])
    return None


def iter_batches_forever(source: Callable[[int], Any], batch_size: int, *, seed: int = 0, start_pass: int = 0,
                         passes_per_source: int = 1, shuffle_buffer: int | None = None, prefetch_blocks: int = 4,
                         device=None) -> Iterator[dict]:
    """Yield full batches {"img": torch.uint8 [B, C, H, W], "c": torch.float32 [B, c_dim]} forever.

    `source(pass_index)` returns what to read for passes pass_index .. pass_index + passes_per_source - 1: a
    `ray.data.Dataset` (e.g. from `make_dataset(..., epoch=pass_index, passes=passes_per_source)`) or a
    `DataIterator` (e.g. `ray.train.get_dataset_shard("train")`). Each source is read once (one Ray Data
    execution), then the next one is asked for.

    Whole blocks come out of Ray Data as they are (no re-batching there: zero-copy tensors) and are shuffled
    here: rows collect in a buffer of at least `shuffle_buffer` rows (default 4 batches); each time it is
    full, it is permuted with a generator seeded by (seed, first pass of the source) and its first rows leave
    as batches while the rest stay to mix with the next blocks. At the end of a source the buffer is permuted
    and emptied down to less than one batch; those rows lead the next source's first batch, so reads do not
    mix otherwise (within one source, rows of neighbouring passes can mix in the buffer). A DataError raised
    in a decode task (corrupt-sample budget) is re-raised as itself."""
    import torch

    if passes_per_source < 1:
        raise ValueError(f"passes_per_source must be >= 1, got {passes_per_source}")
    keep = shuffle_buffer if shuffle_buffer is not None else 4 * batch_size
    buf: dict | None = None
    head = 0  # rows carried over from the previous source: they lead the next batch, in their order
    pass_index = start_pass

    def drain(buf: dict, leave: int, gen) -> Iterator[dict]:
        nonlocal head
        n = len(buf["img"])
        perm = torch.cat([torch.arange(head), head + torch.randperm(n - head, generator=gen)])
        shuffled = {k: v.index_select(0, perm.to(v.device)) for k, v in buf.items()}  # 4x faster than v[perm]
        n_out = max(0, n - leave) // batch_size * batch_size
        for start in range(0, n_out, batch_size):
            yield {k: v[start:start + batch_size] for k, v in shuffled.items()}
        buf.update({k: v[n_out:] for k, v in shuffled.items()})
        head = 0

    while True:
        rows = 0
        gen = torch.Generator().manual_seed((seed * 1_000_003 + pass_index) % 2**63)
        src = source(pass_index)
        try:
            for block in src.iter_torch_batches(batch_size=None, prefetch_batches=prefetch_blocks,
                                                device=device or "auto"):
                rows += len(block["img"])
                block = {"img": block["img"], "c": block["c"]}
                buf = block if buf is None else {k: torch.cat([buf[k], block[k]]) for k in buf}
                if len(buf["img"]) >= keep + batch_size:
                    yield from drain(buf, keep, gen)
        except Exception as exc:
            err = _unwrap_data_error(exc)
            if err is not None:
                raise DataError(str(err)) from exc
            raise
        if rows == 0:
            last = pass_index + passes_per_source - 1
            which = f"pass {pass_index}" if last == pass_index else f"passes {pass_index}-{last}"
            raise DataError(f"{which} of the data produced no images (every sample corrupt, or no shards)")
        if buf is not None:
            yield from drain(buf, 0, gen)
            head = len(buf["img"])
        pass_index += passes_per_source


class ImageStream:
    """The training loop's data: an endless, shuffled stream of full batches from a shard set.

    batches: {"img": torch.uint8 [batch_size, C, H, W], "c": torch.float32 [batch_size, c_dim]}.
    Pass p reads the shards in an order drawn from (seed, p). `start_nimg` (images already shown, across all
    ranks) resumes at the pass holding that image, so a resumed run sees the same shard orders as an
    uninterrupted one would from that pass on. Each Ray Data execution covers `passes_per_execution` passes
    (default: `default_passes(number of shards)`; 1 keeps every pass apart in the shuffle buffer).
    `num_corrupt` is the number of distinct corrupt samples found so far, `corrupt_samples` their list."""

    def __init__(self, uri: str, batch_size: int, *, resolution: int | None = None, channels: int | None = None,
                 use_labels: bool = False, mirror: bool = False, seed: int = 0, start_nimg: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle_buffer: int | None = None,
                 max_corrupt: float = DEFAULT_MAX_CORRUPT, device=None,
                 passes_per_execution: int | None = None):
        self.uri = uri
        self.info = dataset_info(uri)
        check_info(self.info, resolution, channels, use_labels)
        self.batch_size = batch_size
        self.kwargs = dict(use_labels=use_labels, mirror=mirror, seed=seed, rank=rank, world_size=world_size)
        self.seed = seed
        self.pass_images = self.info.num_images * (2 if mirror else 1)  # over all ranks
        self.start_pass = start_nimg // self.pass_images
        self.passes = passes_per_execution or default_passes(len(self.info.shards))
        self.shuffle_buffer = shuffle_buffer
        self.device = device
        self.counter = corrupt_counter(max_corrupt, self.info.num_images)

    def dataset(self, pass_index: int):
        """The Ray Data dataset for passes pass_index .. pass_index + self.passes - 1."""
        return make_dataset(self.uri, epoch=pass_index, passes=self.passes, counter=self.counter, info=self.info,
                            **self.kwargs)

    def __iter__(self) -> Iterator[dict]:
        return iter_batches_forever(self.dataset, self.batch_size, seed=self.seed, start_pass=self.start_pass,
                                    passes_per_source=self.passes, shuffle_buffer=self.shuffle_buffer,
                                    device=self.device)

    @property
    def num_corrupt(self) -> int:
        import ray

        return int(ray.get(self.counter.count.remote()))

    @property
    def corrupt_samples(self) -> list[dict]:
        """[{"shard", "key", "reason"}] of the distinct corrupt samples found so far."""
        import ray

        return ray.get(self.counter.report.remote())
