"""What long runs meet, on the real S3 server (SeaweedFS) killed and restarted on the same ports: shard reads
and checkpoint uploads ride out the outage; an outage longer than the limit stops with a clear message.
(A bad sample counted once: tests/pipeline/test_data_reader.py; a tracking outage: test_tracking.py; a worker
killed mid-run and automatic resume: test_train_ray.py.)"""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path

import pytest

from pipeline import storage
from pipeline.data import BuildOptions, ImageStream, build
from tests.pipeline.data_fixtures import GOOD, make_source

RES = 16
DOWN_S = 8  # seconds the server stays down (plus ~4 s to start again)


def restart_later(s3_restart, down_s: float) -> threading.Thread:
    """Stop the S3 server now and start it again `down_s` seconds later, in a thread."""
    s3_restart.stop()

    def start():
        time.sleep(down_s)
        s3_restart.start()

    thread = threading.Thread(target=start, name="s3-restart", daemon=True)
    thread.start()
    return thread


def test_shard_reads_ride_out_an_s3_restart(ray_local, s3_restart, s3_bucket, tmp_path):
    local = str(tmp_path / "set")
    build(str(make_source(tmp_path / "images")), local,
          BuildOptions(resolution=(RES, RES), transform="center-crop", channels=3, shard_size=3, workers=1),
          progress=False)
    remote = f"{s3_bucket}/set"
    for path in Path(local).iterdir():
        if path.is_file():
            storage.upload_file(path, storage.join(remote, path.name))
    # One pass per Ray Data execution: every pass lists and opens the shards again, so reads meet the outage.
    stream = ImageStream(remote, batch_size=4, passes_per_execution=1)
    it = iter(stream)
    try:
        assert next(it)["img"].shape == (4, 3, RES, RES)
        thread = restart_later(s3_restart, DOWN_S)
        n = 1
        while thread.is_alive() or n < 40:  # through the outage, then 40 batches (~20 passes) at least
            assert next(it)["img"].shape == (4, 3, RES, RES)
            n += 1
        thread.join()
    finally:
        it.close()
    assert stream.num_corrupt == 0 and n * 4 >= 20 * len(GOOD)


def test_checkpoint_upload_rides_out_an_s3_restart_and_a_long_outage_stops(s3_restart, s3_bucket, tmp_path,
                                                                          monkeypatch):
    import pyarrow.fs

    ckpt = tmp_path / "checkpoint_0000000.008kimg"
    ckpt.mkdir()
    files = {"network.safetensors": b"n" * 300_000, "state.pt": b"s" * 1000, "meta.json": b"{}"}
    for name, data in files.items():
        (ckpt / name).write_bytes(data)
    fs, root = storage.pyarrow_fs(f"{s3_bucket}/runs/r")
    fs = pickle.loads(pickle.dumps(fs))  # as Ray ships it to a Train worker: the retries must survive

    s3_restart.stop()
    # Longer than the limit: boto3 calls give up with one sentence naming the endpoint and the limit.
    monkeypatch.setattr(storage, "OUTAGE_LIMIT_S", 2.0)
    t0 = time.monotonic()
    with pytest.raises(storage.StorageError, match=r"was unreachable for \d+ s while reading .* limit is 2 s"):
        storage.read_bytes(f"{s3_bucket}/runs/r/anything")
    assert time.monotonic() - t0 < 15
    monkeypatch.undo()

    # Within the limit: the upload Ray Train does for a checkpoint (pyarrow copy_files) waits and completes.
    starter = threading.Thread(target=lambda: (time.sleep(DOWN_S), s3_restart.start()), daemon=True)
    starter.start()
    t0 = time.monotonic()
    pyarrow.fs.copy_files(str(ckpt), f"{root}/{ckpt.name}", destination_filesystem=fs)
    starter.join()
    assert time.monotonic() - t0 >= DOWN_S
    for name, data in files.items():
        assert storage.read_bytes(f"{s3_bucket}/runs/r/{ckpt.name}/{name}") == data
