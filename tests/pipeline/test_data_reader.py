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
    assert got == expected and (cs.sum(axis=1) == 1).all()  # one-hot labels (docs/algorithm.md "Dataset format")


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


def zero_png_in_place(shard: str | Path, index: int = 0) -> str:
    """Zero the bytes of the `index`-th PNG member of a tar shard where they lie: the tar stays intact, the image
    is unreadable (a damaged file as a real data set has one). Returns the sample's key."""
    with tarfile.open(shard) as tar:
        member = [m for m in tar if m.name.endswith(".png")][index]
    with open(shard, "r+b") as f:
        f.seek(member.offset_data)
        f.write(bytes(member.size))
    return member.name.rsplit("/", 1)[-1].split(".", 1)[0]


def damaged_copy(set_dir: str, dest: Path, shards: dict[int, list[int]]) -> str:
    """A copy of a local shard set with the PNGs {shard index: [member indices]} zeroed; returns its path."""
    shutil.copytree(set_dir, dest)
    for shard, members in shards.items():
        for i in members:
            zero_png_in_place(dest / f"train-{shard:06d}.tar", i)
    return str(dest)


def test_a_bad_sample_is_counted_once_however_many_passes_read_it(ray_local, local_set, tmp_path):
    damaged = damaged_copy(local_set, tmp_path / "damaged", {0: [0]})
    shard = str(Path(damaged, "train-000000.tar"))
    # 3 shards: one execution covers 86 passes. 75 batches of 4 = 50 passes over the 6 good images.
    stream = ImageStream(damaged, batch_size=4, use_labels=True)
    batches = take(stream, 75)
    assert all(b["img"].shape == (4, 3, RES, RES) for b in batches)
    assert len({img.numpy().tobytes() for b in batches for img in b["img"]}) == len(GOOD) - 1
    assert stream.num_corrupt == 1
    (bad,) = stream.corrupt_samples
    assert bad["shard"] == shard and bad["key"] == "00000000" and "cannot identify image" in bad["reason"]

    # A resumed run hands the samples it knew to a new counter: they count once, and known samples are dropped
    # before decoding (shown with a good one listed as known: its image never comes out).
    with tarfile.open(Path(damaged, "train-000001.tar")) as tar:
        good_key = next(m.name.split(".", 1)[0] for m in tar)
    listed = {"shard": str(Path(damaged, "train-000001.tar")), "key": good_key, "reason": "listed by the test"}
    again = ImageStream(damaged, batch_size=4, use_labels=True, start_nimg=300, passes_per_execution=1)
    assert ray_local.get(again.counter.configure.remote(2, "test", [bad, listed])) == 2
    images = {img.numpy().tobytes() for b in take(again, 5) for img in b["img"]}
    assert len(images) == len(GOOD) - 2  # 20 images over passes of the 5 left: each at least once
    assert again.num_corrupt == 2 and again.corrupt_samples == [bad, listed]


def test_the_budget_is_on_distinct_samples_and_names_the_shards(ray_local, local_set, tmp_path):
    from pipeline.data.reader import corrupt_budget

    assert corrupt_budget(0.01, 16) == 1 and corrupt_budget(0.01, 1000) == 10 and corrupt_budget(0, 16) == 0
    assert corrupt_budget(5, 16) == 5 and corrupt_budget(0.5, 7) == 3
    one_bad = damaged_copy(local_set, tmp_path / "one", {0: [0]})
    strict = ImageStream(one_bad, batch_size=3, max_corrupt=0)
    with pytest.raises(DataError, match="1 distinct corrupt samples, more than the budget of 0 .*train-000000.tar"):
        take(strict, 2)
    # Mostly broken (5 of 7): the default budget (1%, at least one sample) stops it in the first pass.
    broken = damaged_copy(local_set, tmp_path / "broken", {0: [0, 1, 2], 1: [0, 1]})
    with pytest.raises(DataError, match=r"more than the budget of 1 \(--max-corrupt 0.01 of 7 images\); in shards "
                                        r".*train-00000[01].tar \(\d\)"):
        take(ImageStream(broken, batch_size=3), 4)
