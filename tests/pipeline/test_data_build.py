"""Shard building: folder / zip / demo sources, local and S3 destinations, reports, labels, resume, errors."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from pipeline import storage
from pipeline.data import BuildOptions, DataError, build, ensure_demo_shards, read_manifest
from pipeline.data.image_codec import to_channels, transform_image
from pipeline.dataset import main as cli
from tests.pipeline.data_fixtures import ALL_SORTED, CORRUPT, GOOD, LABELS, SOLID, make_source


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return make_source(tmp_path_factory.mktemp("src") / "images")


def read_shards(uri: str) -> dict[str, dict]:
    """{key: {"png": array HWC, "cls": int, ...}} for every sample of every shard listed in the manifest."""
    out = {}
    for shard in read_manifest(uri)["shards"]:
        raw = storage.read_bytes(storage.join(uri, shard["name"]))
        assert hashlib.sha256(raw).hexdigest() == shard["sha256"]
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar]
        keys = {name.split(".")[0] for name, _ in members}
        assert sum(1 for name, _ in members if name.endswith(".png")) == shard["count"] == len(keys)
        for name, data in members:
            key, ext = name.split(".", 1)
            sample = out.setdefault(key, {})
            if ext == "png":
                sample["png"] = np.asarray(PIL.Image.open(io.BytesIO(data)))
            elif ext == "cls":
                sample["cls"] = int(data)
            else:
                sample[ext] = json.loads(data)
    return out


def expected_pixels(path: Path, channels: int, transform: str, res: int) -> np.ndarray:
    with PIL.Image.open(path) as img:
        img.load()
        return np.asarray(transform_image(to_channels(img, channels), transform, res, res))


def test_folder_to_local_dir_with_json_labels(src, tmp_path):
    dest = str(tmp_path / "set")
    result = build(str(src), dest, BuildOptions(resolution=(32, 32), transform="center-crop", channels=3,
                                                shard_size=4, workers=1), progress=False)
    m = result.manifest
    assert m["num_images"] == len(GOOD) and m["num_skipped"] == len(CORRUPT)
    assert (m["resolution"], m["channels"]) == (32, 3)
    # counts: how many images in the shards carry each class (training draws its fake labels from them)
    in_shards = Counter(s["cls"] for s in read_shards(dest).values())
    assert m["labels"] == {"kind": "class", "dim": 3, "source": "json", "names": None,
                           "counts": [in_shards[k] for k in range(3)]}
    # Source indices [0,4) [4,8) [8,9) per shard; broken.png is in the first, notes.png in the second.
    assert [s["count"] for s in m["shards"]] == [3, 3, 1]
    assert m["build"]["transform"] == "center-crop" and m["package_version"]

    report = json.loads(Path(dest, "build-report.json").read_text())
    reasons = {s["name"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == set(CORRUPT) and all(r.startswith("unreadable") for r in reasons.values())
    assert report["converted"] == {"L->RGB": 1, "RGBA->RGB": 1}

    samples = read_shards(dest)
    assert sorted(samples) == sorted(f"{ALL_SORTED.index(n):08d}" for n in GOOD)
    for name in GOOD:
        s = samples[f"{ALL_SORTED.index(name):08d}"]
        assert s["cls"] == LABELS[name]
        np.testing.assert_array_equal(s["png"], expected_pixels(src / name, 3, "center-crop", 32))
        if name in SOLID and not name.endswith(".jpg"):
            assert (s["png"] == SOLID[name]).all()
    # Independent of our transform code: the centre of the 64x32 image is pure green; the transparent RGBA
    # image was composited on white; the grayscale one was replicated into three equal channels.
    wide = samples[f"{ALL_SORTED.index('dogs/e.png'):08d}"]["png"]
    assert (wide[:, 4:-4] == (0, 255, 0)).all()
    rgba = samples[f"{ALL_SORTED.index('dogs/f.png'):08d}"]["png"]
    assert (rgba[-8:, -8:] == 255).all() and (rgba[0, 0] == (255, 0, 0)).all()
    gray = samples[f"{ALL_SORTED.index('dogs/d.png'):08d}"]["png"]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    # Rebuilding with the same options resumes every shard and yields identical shards.
    again = build(str(src), dest, BuildOptions(resolution=(32, 32), transform="center-crop", channels=3,
                                               shard_size=4, workers=1), progress=False)
    assert again.resumed_shards == 3 and again.manifest["shards"] == m["shards"]


def test_folder_labels_and_grayscale(src, tmp_path):
    dest = str(tmp_path / "set")
    result = build(str(src), dest, BuildOptions(resolution=(16, 16), channels=1, labels="folders", workers=1,
                                                transform="center-crop"), progress=False)
    m = result.manifest
    in_shards = Counter(s["cls"] for s in read_shards(dest).values())
    assert m["labels"] == {"kind": "class", "dim": 2, "source": "folders", "names": ["cats", "dogs"],
                           "counts": [in_shards[0], in_shards[1]]}
    reasons = {s["name"]: s["reason"] for s in result.report["skipped"]}
    assert reasons["top.png"].startswith("no label")  # at the root: in no class folder
    samples = read_shards(dest)
    assert m["num_images"] == len(GOOD) - 1 == len(samples)
    for name in GOOD:
        if name != "top.png":
            s = samples[f"{ALL_SORTED.index(name):08d}"]
            assert s["cls"] == ["cats", "dogs"].index(name.split("/")[0])
            assert s["png"].shape == (16, 16)
            np.testing.assert_array_equal(s["png"], expected_pixels(src / name, 1, "center-crop", 16))


def test_zip_source_and_center_crop_wide(src, tmp_path):
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(src).as_posix())
    dest = str(tmp_path / "set")
    # 64x32 canvas on 64x64: only the 64x32 image is wide enough; the 48- and 40-pixel ones are too small.
    result = build(str(archive), dest, BuildOptions(resolution=(64, 32), transform="center-crop-wide", channels=3,
                                                    workers=1), progress=False)
    assert result.manifest["num_images"] == 1 and result.manifest["resolution"] == 64
    reasons = [s["reason"] for s in result.report["skipped"]]
    assert sum(r.startswith("too small") for r in reasons) == len(GOOD) - 1
    (sample,) = read_shards(dest).values()
    img = sample["png"]
    assert (img[:16] == 0).all() and (img[-16:] == 0).all()  # black bands above and below
    assert (img[16:48, 24:40] == (0, 255, 0)).all() and sample["cls"] == LABELS["dogs/e.png"]


def test_demo_emoji_to_s3_matches_local(s3_bucket, tmp_path):
    opts = BuildOptions(resolution=(32, 32), channels=4, max_images=12, shard_size=5, workers=1)
    local = build("demo:emoji", str(tmp_path / "emoji"), opts, progress=False)
    remote_uri = f"{s3_bucket}/sets/emoji"
    remote = build("demo:emoji", remote_uri, opts, progress=False)
    assert remote.manifest["num_images"] == 12 and remote.manifest["channels"] == 4
    assert [s["sha256"] for s in remote.manifest["shards"]] == [s["sha256"] for s in local.manifest["shards"]]
    listed = storage.list_uris(remote_uri)
    assert f"{remote_uri}/manifest.json" in listed and f"{remote_uri}/train-000002.tar" in listed
    samples = read_shards(remote_uri)
    assert all(s["png"].shape == (32, 32, 4) for s in samples.values())
    assert any((s["png"][..., 3] == 0).any() for s in samples.values())  # transparency kept with --channels 4


def test_interrupted_upload_leaves_no_manifest_then_resumes(src, tmp_path, monkeypatch):
    dest = str(tmp_path / "set")
    opts = BuildOptions(resolution=(32, 32), transform="center-crop", channels=3, shard_size=2, workers=1)
    real_upload = storage.upload_file
    calls = []

    def flaky_upload(path, uri):
        calls.append(uri)
        if len(calls) == 3:
            raise ConnectionError("connection reset by peer")
        real_upload(path, uri)

    monkeypatch.setattr(storage, "upload_file", flaky_upload)
    with pytest.raises(DataError, match="run the same command again to resume"):
        build(str(src), dest, opts, progress=False)
    assert not Path(dest, "manifest.json").exists()
    monkeypatch.setattr(storage, "upload_file", real_upload)
    result = build(str(src), dest, opts, progress=False)
    assert result.resumed_shards >= 2
    clean = build(str(src), str(tmp_path / "clean"), opts, progress=False)
    assert result.manifest["shards"] == clean.manifest["shards"]
    # A different command replaces the set: no stale shard survives.
    smaller = build(str(src), dest, BuildOptions(resolution=(16, 16), transform="center-crop", channels=3,
                                                 shard_size=100, workers=1), progress=False)
    assert smaller.resumed_shards == 0
    assert sorted(p.name for p in Path(dest).glob("train-*.tar")) == ["train-000000.tar"]


def test_cli_build_info_and_errors(src, tmp_path, capsys, monkeypatch):
    dest = tmp_path / "set"
    assert cli(["build", str(src), str(dest), "--resolution", "32", "--transform", "center-crop",
                "--workers", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {len(GOOD)} images (32x32, 3 channels, class labels, c_dim 3 (from json))" in out
    assert "skipped 2: 2 unreadable" in out
    assert cli(["info", str(dest), "--grid", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert f"images:     {len(GOOD)} (2 skipped at build time)" in out
    assert PIL.Image.open(tmp_path / "grid.png").size == (96, 96)  # 7 images -> 3x3 grid of 32 px

    def error_of(argv):
        assert cli(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
        return err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "contains no images" in error_of(["build", str(empty), str(tmp_path / "x")])
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "cannot write to" in error_of(["build", str(src), str(blocker / "set"), "--resolution", "32"])
    assert "power of two" in error_of(["build", str(src), str(tmp_path / "y"), "--resolution", "48"])
    assert "needs --resolution" in error_of(["build", str(src), str(tmp_path / "y"), "--transform", "center-crop"])
    assert "no manifest.json" in error_of(["info", str(empty)])
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert "no AWS credentials" in error_of(["build", str(src), "s3://bucket/set", "--resolution", "32"])
    assert not list(tmp_path.glob("x")) and not list(tmp_path.glob("y"))


def test_ensure_demo_shards_builds_once(tmp_path):
    uri = ensure_demo_shards(tmp_path, resolution=16, max_images=8, progress=False)
    manifest = Path(uri, "manifest.json")
    first = manifest.stat().st_mtime_ns
    m = read_manifest(uri)
    assert (m["num_images"], m["resolution"], m["channels"]) == (8, 16, 3)
    assert ensure_demo_shards(tmp_path, resolution=16, max_images=8, progress=False) == uri
    assert manifest.stat().st_mtime_ns == first
    assert os.path.basename(uri) == "demo-emoji-16px-3ch-8"


def test_demo_faces_set_holds_only_the_round_smiley_faces(tmp_path):
    """demo:emoji-faces (the embedded default's set) is the 100 yellow round faces of the bundled Twemoji:
    single code points in the face blocks, no flags, hands, people or sequences."""
    from pipeline.data.sources import open_source

    faces = open_source("demo:emoji-faces").names
    everything = set(open_source("demo:emoji").names)
    assert len(faces) == 100 and set(faces) <= everything
    assert {"1f600.png", "1f60d.png", "1f92f.png", "1f9d0.png"} <= set(faces)  # grinning, heart eyes, exploding, monocle
    assert not {"1f1e6-1f1e8.png", "1f44d.png", "1f638.png", "1fae6.png"} & set(faces)  # a flag, thumbs up, a cat, lips
    uri = ensure_demo_shards(tmp_path, resolution=16, max_images=4, progress=False, source="demo:emoji-faces")
    assert os.path.basename(uri) == "demo-emoji-faces-16px-3ch-4"
    assert read_manifest(uri)["num_images"] == 4
