"""Build webdataset shards from an image source: `python -m pipeline.dataset build SRC DEST`.

Layout written at DEST (a local directory or s3://bucket/prefix):

    train-000000.tar, train-000001.tar, ...   samples KEY.png (+ KEY.cls or KEY.json when labelled)
    build-report.json                          what was skipped or converted, and why
    manifest.json                              written LAST: its presence means the set is complete
    _build/state.json, _build/shard-NNNNNN.json  resume records (options hash; per finished shard)

KEY is the image's index in the sorted source listing (`%08d`), so a key names the same source image across
re-runs and resumes; skipped images leave a gap. Shard i holds source indices [i*S, (i+1)*S), S = shard size.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import json
import multiprocessing
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import PIL.Image

from pipeline import storage
from pipeline.data.errors import DataError
from pipeline.data.image_codec import PNG_COMPRESS_LEVEL, TRANSFORMS, encode_png, native_channels, to_channels, transform_image
from pipeline.data.sources import Source, SourceReader, SourceSpec, open_source

MANIFEST_NAME = "manifest.json"
REPORT_NAME = "build-report.json"
FORMAT = "stylegan3-ray/webdataset-v1"
LABEL_MODES = ("folders", "json", "none")


def shard_name(index: int) -> str:
    return f"train-{index:06d}.tar"


def package_version() -> str:
    """Version of this package: installed metadata, else the pyproject.toml of a source checkout."""
    import importlib.metadata

    try:
        return importlib.metadata.version("stylegan3-ray")
    except importlib.metadata.PackageNotFoundError:
        import tomllib
        from pathlib import Path

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text())["project"]["version"]


@dataclass
class BuildOptions:
    """What to build. `resolution` is (width, height) in pixels, height < width only with center-crop-wide;
    None keeps the size of the first image (which must then be square, a power of two). `channels` None
    takes the first image's (1 grayscale, 3 colour, 4 colour with alpha). `labels` None means "json" when
    the source has a dataset.json with labels, else "none". `shard_size` is images per shard;
    `max_images` uses only the first N source images (as the official tool); `workers` decode processes."""

    resolution: tuple[int, int] | None = None
    transform: str = "none"
    channels: int | None = None
    labels: str | None = None
    shard_size: int = 1000
    max_images: int | None = None
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)


@dataclass
class BuildResult:
    manifest: dict
    report: dict
    resumed_shards: int
    seconds: float


def parse_resolution(text: str) -> tuple[int, int]:
    """'256' -> (256, 256); '512x384' -> (512, 384)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise DataError(f"--resolution {text!r} is not a size: write R (square) or WxH")
    return parts[0], parts[1]


# ----------------------------------------------------------------------------------------------- worker side

_WORKER: dict = {}


def _init_worker(spec: SourceSpec, plan: dict) -> None:
    _WORKER["reader"] = SourceReader(spec)
    _WORKER["plan"] = plan


def _process(task: tuple[int, str]) -> tuple[int, bytes | None, str | None, str | None]:
    """Load, convert and transform one image. Returns (index, png bytes or None, skip reason or None,
    conversion note like "RGBA->RGB" or None)."""
    index, name = task
    plan = _WORKER["plan"]
    try:
        data = _WORKER["reader"].read(name)
        with PIL.Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes fully: a truncated file raises here, not later
            src_mode = img.mode
            src_channels = native_channels(img)
            out = to_channels(img, plan["channels"])
    except PIL.UnidentifiedImageError:
        return index, None, "unreadable: not an image format PIL recognises", None
    except Exception as exc:  # noqa: BLE001 - any failure to read an image is a reason to skip it
        return index, None, f"unreadable: {type(exc).__name__}: {exc}", None
    width, height = plan["width"], plan["height"]
    if plan["keep_size"] and out.size != (width, height):
        return index, None, (f"size {out.size[0]}x{out.size[1]} differs from the first image's {width}x{height} "
                             "(pass --resolution to resize)"), None
    result = transform_image(out, plan["transform"], width, height)
    if isinstance(result, str):
        return index, None, result, None
    note = f"{src_mode}->{result.mode}" if src_channels != plan["channels"] else None
    return index, encode_png(result), None, note


# ------------------------------------------------------------------------------------------------ main side


def _labels_for(source: Source, names: list[str], mode: str) -> tuple[dict, dict]:
    """Return ({name: label}, label description for the manifest)."""
    if mode == "none":
        return {}, {"kind": "none", "dim": 0, "source": None, "names": None}
    if mode == "folders":
        classes = sorted({n.split("/", 1)[0] for n in names if "/" in n})
        if not classes:
            raise DataError(f"--labels folders: {source.spec.root} has no subfolders; put each class's images "
                            "in a folder named after the class")
        index = {c: i for i, c in enumerate(classes)}
        labels = {n: index[n.split("/", 1)[0]] for n in names if "/" in n}
        return labels, {"kind": "class", "dim": len(classes), "source": "folders", "names": classes}
    # json
    if source.labels_json is None:
        raise DataError(f"--labels json: {source.spec.root} has no dataset.json with labels "
                        "(absent, or labels is null); use --labels folders or --labels none")
    used = [source.labels_json[n] for n in names if n in source.labels_json]
    if not used:
        raise DataError(f"--labels json: dataset.json in {source.spec.root} labels none of the images "
                        "(names must be relative paths like 00000/img00000000.png)")
    if all(isinstance(v, int) for v in used):
        return source.labels_json, {"kind": "class", "dim": max(used) + 1, "source": "json", "names": None}
    if all(isinstance(v, list) for v in used) and len({len(v) for v in used}) == 1:
        return source.labels_json, {"kind": "vector", "dim": len(used[0]), "source": "json", "names": None}
    raise DataError(f"dataset.json in {source.spec.root} mixes class indices and vectors (or vectors of "
                    "different lengths); every label must be of one kind")


def _label_distribution(labels: dict, names: list[str], skipped: set, kind: str, dim: int) -> dict:
    """How often each label occurs among the images written to the shards: {"counts": [n per class]} for class
    labels, {"values": [distinct vectors], "counts": [n per vector]} for vector labels. Training draws the labels
    of its fakes from it (the labels of random training images, docs/algorithm.md "Training phases")."""
    used = [labels[n] for n in names if n in labels and n not in skipped]
    if kind == "class":
        counts = Counter(int(v) for v in used)
        return {"counts": [counts.get(k, 0) for k in range(dim)]}
    counts = Counter(tuple(float(x) for x in v) for v in used)
    return {"values": [list(v) for v in counts], "counts": list(counts.values())}


def _first_image(source: Source, names: list[str]) -> PIL.Image.Image:
    reader = SourceReader(source.spec)
    for name in names[:1000]:
        try:
            img = PIL.Image.open(io.BytesIO(reader.read(name)))
            img.load()
            return img
        except Exception:  # noqa: BLE001 - skipped images are reported later, in the build itself
            continue
    raise DataError(f"none of the first {min(len(names), 1000)} images in {source.spec.root} can be read")


def _is_pow2(n: int) -> bool:
    return n >= 4 and n & (n - 1) == 0


def _resolve_plan(source: Source, names: list[str], opts: BuildOptions) -> dict:
    if opts.transform not in TRANSFORMS:
        raise DataError(f"--transform {opts.transform!r}: expected one of {', '.join(TRANSFORMS)}")
    if opts.channels not in (None, 1, 3, 4):
        raise DataError(f"--channels {opts.channels}: expected 1, 3 or 4")
    first = None
    if opts.channels is None or opts.resolution is None:
        first = _first_image(source, names)
    channels = opts.channels if opts.channels is not None else native_channels(first)
    keep_size = opts.resolution is None
    if keep_size:
        if opts.transform != "none":
            raise DataError(f"--transform {opts.transform} needs --resolution (the output size)")
        width, height = first.size
        if width != height or not _is_pow2(width):
            raise DataError(f"the first image is {width}x{height}; StyleGAN needs square power-of-two images: "
                            "pass --resolution R (and --transform center-crop to keep the aspect ratio)")
    else:
        width, height = opts.resolution
    if not _is_pow2(width):
        raise DataError(f"--resolution {width}: the width must be a power of two >= 4 (e.g. 64, 256, 1024)")
    if height != width and (opts.transform != "center-crop-wide" or height > width):
        raise DataError(f"--resolution {width}x{height}: a non-square size needs --transform center-crop-wide "
                        "and a height no larger than the width (the result is a square canvas)")
    return {"width": width, "height": height, "channels": channels, "transform": opts.transform,
            "keep_size": keep_size}


def _probe_writable(dest: str) -> None:
    probe = storage.join(dest, "_build", f".probe-{os.getpid()}")
    try:
        storage.ensure_bucket(dest)
        storage.write_bytes(probe, b"ok")
        storage.delete(probe)
    except Exception as exc:  # noqa: BLE001 - any failure here means DEST is not usable
        raise DataError(f"cannot write to {dest}: {type(exc).__name__}: {exc}") from None


def _read_json(uri: str) -> dict | None:
    try:
        if not storage.exists(uri):
            return None
        return json.loads(storage.read_bytes(uri))
    except ValueError:
        return None


def _write_json(uri: str, doc: dict) -> None:
    storage.write_bytes(uri, (json.dumps(doc, indent=1) + "\n").encode())


def shard_writer(path: str):
    """webdataset's TarWriter for one shard, set up for reproducible bytes: same input and options, same
    sha256 (fixed mtime, owner, mode and tar format; samples hold bytes, no encoder runs)."""
    import webdataset  # a second of import time, only when a set is built

    return webdataset.TarWriter(path, encoder=False, mtime=0, mode=0o644, user="", group="", format="GNU_FORMAT")


def build(src: str, dest: str, opts: BuildOptions, *, progress: bool = True, log=print) -> BuildResult:
    """Build the shard set of `src` at `dest`. Every check that can fail fast runs before any image is
    processed. A failure part-way leaves no manifest.json; re-running the same command resumes from the
    finished shards, and a different command (or a changed source) replaces the set. Raises DataError."""
    t0 = time.time()
    try:
        storage.parse(dest)
        storage.check_credentials(dest)
    except storage.StorageError as exc:
        raise DataError(str(exc)) from None
    if opts.shard_size < 1:
        raise DataError(f"--shard-size {opts.shard_size}: must be at least 1 image per shard")
    if opts.max_images is not None and opts.max_images < 1:
        raise DataError(f"--max-images {opts.max_images}: must be at least 1")
    source = open_source(src)
    names = source.names[: opts.max_images] if opts.max_images else list(source.names)
    if not names:
        raise DataError(f"source {src} contains no images (looked for files ending in .png, .jpg, .webp, ...)")
    label_mode = opts.labels or ("json" if source.labels_json is not None else "none")
    if label_mode not in LABEL_MODES:
        raise DataError(f"--labels {label_mode!r}: expected one of {', '.join(LABEL_MODES)}")
    labels, label_info = _labels_for(source, names, label_mode)
    plan = _resolve_plan(source, names, opts)
    _probe_writable(dest)

    build_options = {
        "source": src, "transform": plan["transform"], "resolution": [plan["width"], plan["height"]],
        "channels": plan["channels"], "labels": label_mode, "shard_size": opts.shard_size,
        "max_images": opts.max_images, "png_compress_level": PNG_COMPRESS_LEVEL,
    }
    options_hash = hashlib.sha256(json.dumps([build_options, source.fingerprint], sort_keys=True).encode()).hexdigest()
    num_shards = (len(names) + opts.shard_size - 1) // opts.shard_size

    # A manifest from an earlier build must go first: from here until the new one is written, DEST is
    # visibly incomplete.
    storage.delete(storage.join(dest, MANIFEST_NAME))
    state_uri = storage.join(dest, "_build", "state.json")
    state = _read_json(state_uri)
    done: dict[int, dict] = {}
    existing = storage.list_uris(dest)
    if state is not None and state.get("options_hash") == options_hash:
        for i in range(num_shards):
            rec_uri = storage.join(dest, "_build", f"shard-{i:06d}.json")
            if rec_uri in existing and storage.join(dest, shard_name(i)) in existing:
                rec = _read_json(rec_uri)
                if rec is not None:
                    done[i] = rec
        keep = {storage.join(dest, shard_name(i)) for i in range(num_shards)}
        keep |= {storage.join(dest, "_build", f"shard-{i:06d}.json") for i in range(num_shards)}
        keep.add(state_uri)
    else:
        keep = set()
    # Remove what an earlier build left that this one will not reuse; nothing else at DEST is touched.
    prefix = storage.join(dest, "x")[:-1]  # DEST with a trailing separator
    for uri in existing:
        rel = uri[len(prefix):] if uri.startswith(prefix) else ""
        ours = (("/" not in rel and ((rel.startswith("train-") and rel.endswith(".tar")) or rel == REPORT_NAME))
                or (rel.startswith("_build/") and rel.count("/") == 1 and rel.endswith(".json")))
        if ours and uri not in keep:
            storage.delete(uri)
    _write_json(state_uri, {"options_hash": options_hash, "build": build_options})
    if done:
        log(f"resuming: {len(done)} of {num_shards} shards already at {dest}")

    pending = [i for i in range(num_shards) if i not in done]
    tasks = [(idx, names[idx]) for i in pending for idx in range(i * opts.shard_size, min((i + 1) * opts.shard_size, len(names)))]
    label_ext = {"class": "cls", "vector": "json"}.get(label_info["kind"])

    workers = max(1, int(opts.workers))
    pool = None
    if workers > 1 and len(tasks) > 64:
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker,
                                                         initargs=(source.spec, plan))
        results = pool.imap(_process, tasks, chunksize=8)
    else:
        _init_worker(source.spec, plan)
        results = map(_process, tasks)

    from tqdm import tqdm

    bar = tqdm(total=len(tasks), unit="img", desc="build", disable=not progress, smoothing=0.1)
    uploader = cf.ThreadPoolExecutor(max_workers=4, thread_name_prefix="upload")
    inflight: list[cf.Future] = []
    tmpdir = tempfile.mkdtemp(prefix="sg3-shards-")

    def upload(i: int, path: str, record: dict) -> None:
        storage.upload_file(path, storage.join(dest, shard_name(i)))
        _write_json(storage.join(dest, "_build", f"shard-{i:06d}.json"), record)
        os.unlink(path)
        done[i] = record

    try:
        for i in pending:
            lo, hi = i * opts.shard_size, min((i + 1) * opts.shard_size, len(names))
            path = os.path.join(tmpdir, shard_name(i))
            skipped, converted, count = [], Counter(), 0
            with shard_writer(path) as tar:
                for _ in range(lo, hi):
                    index, png, reason, note = next(results)
                    bar.update(1)
                    name = names[index]
                    if png is None:
                        skipped.append({"name": name, "reason": reason})
                        continue
                    if label_ext and name not in labels:
                        skipped.append({"name": name, "reason": "no label (not in dataset.json / not in a class folder)"})
                        continue
                    sample = {"__key__": f"{index:08d}", "png": png}
                    if label_ext == "cls":
                        sample["cls"] = str(labels[name]).encode()
                    elif label_ext == "json":
                        sample["json"] = json.dumps([float(v) for v in labels[name]]).encode()
                    tar.write(sample)
                    if note:
                        converted[note] += 1
                    count += 1
            record = {"name": shard_name(i), "count": count, "sha256": storage.sha256_file(path),
                      "bytes": os.path.getsize(path), "skipped": skipped, "converted": dict(converted)}
            inflight.append(uploader.submit(upload, i, path, record))
            # Bound local disk use: wait for older uploads once 8 shards are queued.
            while sum(not f.done() for f in inflight) > 8:
                cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
        for fut in cf.as_completed(inflight):
            exc = fut.exception()
            if exc is not None:
                raise DataError(f"uploading a shard to {dest} failed ({type(exc).__name__}: {exc}); "
                                "no manifest was written: run the same command again to resume") from exc
    finally:
        bar.close()
        uploader.shutdown(wait=True, cancel_futures=True)
        if pool is not None:
            pool.terminate()
            pool.join()
        for leftover in os.listdir(tmpdir):
            os.unlink(os.path.join(tmpdir, leftover))
        os.rmdir(tmpdir)

    records = [done[i] for i in range(num_shards)]
    skipped = [s for r in records for s in r["skipped"]]
    converted = Counter()
    for r in records:
        converted.update(r["converted"])
    num_images = sum(r["count"] for r in records)
    report = {"source": src, "dest": dest, "source_images": len(names), "num_images": num_images,
              "num_skipped": len(skipped), "skipped": skipped, "converted": dict(converted),
              "channels": plan["channels"]}
    _write_json(storage.join(dest, REPORT_NAME), report)
    if num_images == 0:
        raise DataError(f"none of the {len(names)} images of {src} could be used; reasons in "
                        f"{storage.join(dest, REPORT_NAME)}")
    if label_info["kind"] != "none":  # the labels' distribution over the images in the shards (fake labels)
        label_info = {**label_info, **_label_distribution(labels, names, {s["name"] for s in skipped},
                                                          label_info["kind"], label_info["dim"])}
    manifest = {
        "format": FORMAT, "package_version": package_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "num_images": num_images, "resolution": plan["width"], "channels": plan["channels"],
        "labels": label_info, "num_skipped": len(skipped),
        "shards": [{k: r[k] for k in ("name", "count", "sha256", "bytes")} for r in records],
        "build": build_options,
    }
    _write_json(storage.join(dest, MANIFEST_NAME), manifest)
    return BuildResult(manifest, report, resumed_shards=num_shards - len(pending), seconds=time.time() - t0)


def summary_lines(result: BuildResult) -> list[str]:
    """The console summary of a finished build."""
    m, r = result.manifest, result.report
    lab = m["labels"]
    label_text = "unlabelled" if lab["kind"] == "none" else f"{lab['kind']} labels, c_dim {lab['dim']} (from {lab['source']})"
    lines = [f"wrote {m['num_images']} images ({m['resolution']}x{m['resolution']}, {m['channels']} channels, "
             f"{label_text}) in {len(m['shards'])} shard{'s' if len(m['shards']) != 1 else ''} to {r['dest']} in {result.seconds:.1f} s"
             + (f" ({result.resumed_shards} shards resumed)" if result.resumed_shards else "")]
    if r["converted"]:
        lines.append("converted: " + ", ".join(f"{n} {k}" for k, n in sorted(r["converted"].items())))
    if r["skipped"]:
        reasons = Counter(s["reason"].split(":")[0] for s in r["skipped"])
        lines.append(f"skipped {len(r['skipped'])}: " + ", ".join(f"{n} {k}" for k, n in reasons.most_common())
                     + f" (details in {REPORT_NAME})")
    return lines
