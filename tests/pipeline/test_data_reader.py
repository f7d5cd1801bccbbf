"""The Ray Data reader: pixels and labels round-trip from local and S3 shards, mirroring, the endless
stream, manifest checks and corrupt-sample accounting."""

from __future__ import annotations

import io
import itertools
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipeline import storage
from pipeline.data import BuildOptions, DataError, ImageStream, build, default_passes, make_dataset
from tests.pipeline.data_fixtures import GOOD, LABELS, make_source
from tests.pipeline.test_data_build import expected_pixels

RES = 16


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return make_source(tmp_path_factory.mktemp("src") / "images")


@pytest.fixture(scope="module")
def local_set(src, tmp_path_factory) -> str:
    dest = str(tmp_path_factory.mktemp("sets") / "local")
    build(str(src), dest, BuildOptions(resolution=(RES, RES), transform="center-crop", channels=3, shard_size=3,
                                       workers=1), progress=False)
    return dest


def expected_by_pixels(src: Path) -> dict[bytes, int]:
    """{CHW image bytes: class} for every usable source image, after the build's transform."""
    return {expected_pixels(src / n, 3, "center-crop", RES).transpose(2, 0, 1).tobytes(): LABELS[n] for n in GOOD}


def read_all(ds) -> tuple[np.ndarray, np.ndarray]:
    imgs, cs = [], []
    for batch in ds.iter_torch_batches(batch_size=4):
        imgs.append(batch["img"].numpy())
        cs.append(batch["c"].numpy())
    return np.concatenate(imgs), np.concatenate(cs)


def check_round_trip(ds, src):
    imgs, cs = read_all(ds)
    assert imgs.dtype == np.uint8 and imgs.shape == (len(GOOD), 3, RES, RES)
    assert cs.dtype == np.float32 and cs.shape == (len(GOOD), 3)
    expected = expected_by_pixels(src)
    got = {img.tobytes(): int(np.argmax(c)) for img, c in zip(imgs, cs)}
    assert got == expected and (cs.sum(axis=1) == 1).all()  # one-hot labels (spec §h)


def test_local_and_s3_round_trip(ray_local, src, local_set, s3_bucket):
    check_round_trip(make_dataset(local_set, resolution=RES, channels=3, use_labels=True), src)
    remote = f"{s3_bucket}/set"
    for path in Path(local_set).iterdir():
        if path.is_file():
            storage.upload_file(path, storage.join(remote, path.name))
    check_round_trip(make_dataset(remote, resolution=RES, channels=3, use_labels=True, seed=3), src)


def test_mirror_and_unlabelled(ray_local, src, local_set):
    imgs, cs = read_all(make_dataset(local_set, mirror=True))
    assert imgs.shape == (2 * len(GOOD), 3, RES, RES) and cs.shape == (2 * len(GOOD), 0)
    got = sorted(img.tobytes() for img in imgs)
    plain = [np.frombuffer(b, np.uint8).reshape(3, RES, RES) for b in expected_by_pixels(src)]
    want = sorted([p.tobytes() for p in plain] + [p[:, :, ::-1].tobytes() for p in plain])
    assert got == want


def take(stream, n: int) -> list[dict]:
    it = iter(stream)
    try:
        return list(itertools.islice(it, n))
    finally:
        it.close()  # stops the running Ray Data execution


def test_stream_is_endless_and_full(ray_local, local_set):
    # One pass per Ray Data execution: every pass is shuffled on its own.
    stream = ImageStream(local_set, batch_size=4, resolution=RES, use_labels=True, seed=1, passes_per_execution=1)
    batches = take(stream, 3)  # 12 images: all 7 of pass 0, then 5 of pass 1 (the carry fills batch 2)
    assert all(b["img"].shape == (4, 3, RES, RES) and b["c"].shape == (4, 3) for b in batches)
    assert stream.num_corrupt == 0
    images = [img.numpy().tobytes() for b in batches for img in b["img"]]
    assert len(set(images[:7])) == len(GOOD)  # pass 0 shows each image exactly once
    assert set(images[7:]) <= set(images[:7])


def test_one_execution_covers_several_passes(ray_local, local_set):
    # 3 shards: the default packs enough passes into one execution to read 256 shards.
    assert default_passes(3) == 86 and default_passes(256) == 1 and default_passes(10_000) == 1
    assert default_passes(1) == 256  # capped

    # make_dataset(epoch=4, passes=3), i.e. passes 4-6 in one dataset: every image exactly 3 times.
    imgs, _ = read_all(make_dataset(local_set, epoch=4, passes=3))
    counts = {}
    for img in imgs:
        counts[img.tobytes()] = counts.get(img.tobytes(), 0) + 1
    assert len(counts) == len(GOOD) and set(counts.values()) == {3}

    # The stream over 2-pass executions: the first 14 images are passes 0-1, every image exactly twice (12 leave
    # as 3 batches, the 2 left over lead batch 4, which the next execution, passes 2-3, fills).
    stream = ImageStream(local_set, batch_size=4, resolution=RES, seed=1, passes_per_execution=2)
    images = [img.numpy().tobytes() for b in take(stream, 7) for img in b["img"]]
    assert len(images) == 28
    first = {}
    for img in images[:14]:
        first[img] = first.get(img, 0) + 1
    assert len(first) == len(GOOD) and set(first.values()) == {2}


def test_manifest_mismatch_errors(ray_local, local_set, tmp_path):
    with pytest.raises(DataError, match="holds 16x16 images but resolution 32"):
        make_dataset(local_set, resolution=32)
    with pytest.raises(DataError, match="3-channel images but 1 channels"):
        make_dataset(local_set, channels=1)
    unlabelled = str(tmp_path / "unlabelled")
    shutil.copytree(local_set, unlabelled)
    manifest = Path(unlabelled, "manifest.json")
    manifest.write_text(manifest.read_text().replace('"kind": "class"', '"kind": "none"').replace('"dim": 3', '"dim": 0'))
    with pytest.raises(DataError, match="has no labels but conditional training"):
        make_dataset(unlabelled, use_labels=True)
    with pytest.raises(DataError, match="no manifest.json"):
        make_dataset(str(tmp_path / "nothing-here"))


def _corrupt_one_sample(set_dir: str) -> str:
    """Replace the PNG of the first sample of shard 0 with garbage; returns the shard's path."""
    path = Path(set_dir, "train-000000.tar")
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(path, "w") as tar:
        for i, (m, data) in enumerate(members):
            if i == 0:
                data = data[: len(data) // 3]
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    return str(path)


def test_corrupt_samples_are_counted_then_stop_the_run(ray_local, local_set, tmp_path):
    damaged = str(tmp_path / "damaged")
    shutil.copytree(local_set, damaged)
    shard = _corrupt_one_sample(damaged)
    stream = ImageStream(damaged, batch_size=3, use_labels=True, corrupt_budget=5, passes_per_execution=1)
    batches = take(stream, 2)  # the 6 good images: exactly one pass, so every shard was decoded
    assert all(b["img"].shape == (3, 3, RES, RES) for b in batches)
    assert len({img.numpy().tobytes() for b in batches for img in b["img"]}) == len(GOOD) - 1
    assert stream.num_corrupt == 1
    strict = ImageStream(damaged, batch_size=3, corrupt_budget=0)
    with pytest.raises(DataError, match=f"budget of 0.*{shard}"):
        take(strict, 2)
