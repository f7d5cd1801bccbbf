"""The Ray Train loop: what each worker runs (docs/algorithm.md "Training").

`train_loop_per_worker` builds the networks, restores the latest checkpoint (automatic resume), streams its data
shard through `pipeline.training.trainer.Trainer` (the step), reports metrics every tick and a full checkpoint every
`snap` ticks. The driver side that starts it is `pipeline.training.launch`.

Checkpoints upload in the background (the next step does not wait on storage). A spot preemption announced by a
node drain (`ray.train.get_preemption_info`) makes the workers write a checkpoint at once, uploaded before they go
on, and then stop: Ray Train restarts the run when the node goes (counted as a preemption, not a failure) and the
resumed run continues from that step (docs/cluster.md "Spot instances").
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from typing import Any, Iterator

import numpy as np
import torch

import models
from pipeline import storage
from pipeline.data import iter_batches_forever
from pipeline.data.reader import budget_text, corrupt_budget
from pipeline.metrics.core import DEFAULT_CACHE_DIR
from pipeline.training import checkpoint as ckpt_io
from pipeline.training import progress
from pipeline.training.callbacks import CallbackList, TrainCallbacks
from pipeline.training.config import ConfigError, TrainConfig
from pipeline.training.loss import blur_sigma
from pipeline.training.trainer import Trainer

# Steps between two asks for a preemption notice: the ask is a barrier of all workers (~4 ms on CPU), and clouds
# give 30 s (GCP) to 2 min (AWS) of notice, so every 4th step keeps its cost under ~1 % of a GPU step.
PREEMPTION_CHECK_STEPS = 4


def build_networks(cfg: TrainConfig):
    """(G, D) of a resolved config's network section, freshly initialised (seeded by cfg.run.seed)."""
    if cfg.network is None:
        raise ConfigError("the config has no network section: build networks from TrainConfig.resolved()")
    torch.manual_seed(cfg.run.seed)
    return models.build_from_config(cfg.network)


def rank0_callbacks(cfg: TrainConfig, factories=()) -> TrainCallbacks:
    """The rank-0 worker's callbacks: the tracking hook that cfg.tracking describes, then one per factory."""
    callbacks = [factory(cfg) for factory in factories]
    if cfg.tracking.enabled:
        # Imported here: MLflow takes seconds to import, and only the rank-0 worker of a tracked run needs it.
        from pipeline.tracking import make_callbacks

        callbacks.insert(0, make_callbacks(cfg))
    return CallbackList(callbacks)


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


@contextlib.contextmanager
def _local_checkpoint_dir(checkpoint) -> Iterator[str]:
    """The checkpoint as a local directory, private to this worker.

    Not ``Checkpoint.as_directory()``: for remote storage it downloads into one temporary directory shared by
    every worker on the node, and a worker that arrives after another's download has finished downloads again
    into the same files while the first one reads them (seen as an EOFError in torch.load on resume)."""
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        yield checkpoint.path
        return
    with tempfile.TemporaryDirectory(prefix="sg3-resume-") as tmp:
        yield checkpoint.to_directory(tmp)


def _publish_progress(history, directory: str, run_dir: str | None) -> None:
    """progress.png (curve + the checkpoint's fakes grid) into the checkpoint `directory` and, with its data
    (progress.json), into the run directory (local or s3), where the newest one replaces the last."""
    import json

    grid_path = os.path.join(directory, ckpt_io.GRID_FILE)
    grid = None
    if os.path.exists(grid_path):
        from PIL import Image

        grid = np.asarray(Image.open(grid_path))
        grid = grid[:, :, None] if grid.ndim == 2 else grid
    png = progress.render(history, grid)
    with open(os.path.join(directory, progress.PROGRESS_FILE), "wb") as f:
        f.write(png)
    if run_dir:
        storage.write_bytes(storage.join(run_dir, progress.PROGRESS_FILE), png)
        storage.write_bytes(storage.join(run_dir, progress.HISTORY_FILE), json.dumps(history.rows).encode())


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Entry point of every Ray Train worker. loop_config: {"config": TrainConfig.to_dict() (resolved), ...};
    "step_hooks": callables `hook(trainer)` run on every worker after each step; "train_callbacks": factories of
    extra rank-0 callbacks (see `launch.build_trainer`)."""
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # docs/algorithm.md "Mixed precision"
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    G, D = build_networks(cfg)
    labels = loop_config.get("labels")  # (values [K][c_dim], counts [K]) of the whole set (conditional runs)
    trainer = Trainer(cfg, G, D, device, rank, world,
                      labels=(torch.tensor(labels[0]), torch.tensor(labels[1])) if labels else None)

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with _local_checkpoint_dir(checkpoint) as d:
            ckpt_io.restore(trainer, d)
    elif cfg.run.resume:
        ckpt_io.load_weights(trainer, cfg.run.resume)
    trainer.extra["dataset_manifest_sha256"] = loop_config.get("manifest_sha256")
    step_hooks = tuple(loop_config.get("step_hooks") or ())
    callbacks = rank0_callbacks(cfg, loop_config.get("train_callbacks") or ()) if rank == 0 else TrainCallbacks()
    callbacks.on_start(trainer, resumed=checkpoint is not None)
    # Quality over time (pipeline.training.progress): rank 0 keeps the curve (in every checkpoint), measures G_ema
    # at every snapshot unless --quality 0, and draws progress.png beside the checkpoints.
    history = progress.History(trainer.extra.get("progress"))
    probe = None
    if rank == 0 and cfg.run.quality and loop_config.get("dataset_info") is not None:
        probe = progress.QualityProbe(loop_config["dataset_info"], labels=labels if cfg.model.c_dim else None,
                                      cache_dir=DEFAULT_CACHE_DIR)
        if trainer.cur_nimg == 0 and not history.rows:
            # A new run: the curve (and the summary's "start -> end") begins with the untrained generator.
            history.add({"kimg": 0.0, progress.QUALITY_KEY: probe.measure(trainer.G_ema)})
            trainer.extra["progress"] = history.rows
            trainer.seed_rngs()  # the run draws the same with or without this measurement

    # Data (docs/algorithm.md "Data feed"): endless full batches of this worker's share; time is counted in images. A resumed
    # run restarts the data pass that held cur_nimg, with that pass's shuffle seed.
    shard = ray.train.get_dataset_shard("train")
    pass_images = max(int(loop_config.get("pass_images", 0)), 1)
    trainer.data_pass = trainer.cur_nimg // pass_images
    batches = iter_batches_forever(lambda _pass: shard, cfg.worker_batch, seed=cfg.run.seed * 1009 + rank,
                                   start_pass=trainer.data_pass,
                                   passes_per_source=int(loop_config.get("passes_per_execution", 1)))
    # Corrupt samples (pipeline.data.reader): the run's budget, and the samples this run already found (kept in
    # every checkpoint), so that a resumed run neither counts them again nor decodes them.
    counter = loop_config.get("corrupt_counter")
    if counter is not None:
        num_images = pass_images // (2 if cfg.data.mirror else 1)
        ray.get(counter.configure.remote(corrupt_budget(cfg.run.max_corrupt, num_images),
                                         budget_text(cfg.run.max_corrupt, num_images),
                                         trainer.extra.get("corrupt_samples", [])))
    s = cfg.schedule
    total_nimg = int(s.kimg * 1000)
    tick_start_nimg, tick_start_time = trainer.cur_nimg, time.time()
    done, preempted = trainer.cur_nimg >= total_nimg, False
    while not (done or preempted):
        batch = next(batches)
        trainer.step(batch["img"], batch["c"])
        for hook in step_hooks:
            hook(trainer)
        trainer.data_pass = trainer.cur_nimg // pass_images
        done = trainer.cur_nimg >= total_nimg
        # batch_idx is the same on every worker, so they all reach this barrier together.
        if not done and trainer.batch_idx % PREEMPTION_CHECK_STEPS == 0:
            preempted = ray.train.get_preemption_info() is not None
        if not (done or preempted) and trainer.cur_nimg < tick_start_nimg + s.tick * 1000:
            continue
        # End of tick (docs/algorithm.md "Official training options": --tick kimg): report metrics; every `snap` ticks also a checkpoint.
        trainer.cur_tick += 1
        elapsed = time.time() - tick_start_time
        nimg = trainer.cur_nimg - tick_start_nimg
        metrics = {f"loss/{k}": v for k, v in trainer.tick_stats().items()}
        metrics.update({
            "kimg": trainer.cur_nimg / 1000, "cur_nimg": trainer.cur_nimg, "tick": trainer.cur_tick,
            "total_kimg": s.kimg, "ada_p": trainer.ada_p,
            "blur_sigma": blur_sigma(trainer.cur_nimg, cfg.loss.blur_init_sigma, cfg.loss.blur_fade_kimg),
            "sec_per_kimg": elapsed / max(nimg / 1000, 1e-9), "img_per_s": nimg / max(elapsed, 1e-9),
            "peak_mem_gb": _peak_memory_gb(device),
            # distinct corrupt samples of the run so far (each counted once however many passes read it)
            "corrupt_skipped": int(ray.get(counter.count.remote())) if counter is not None else 0,
            "done": done, "preempted": preempted,
        })
        snapshot = done or preempted or (s.snap > 0 and trainer.cur_tick % s.snap == 0)
        if snapshot and probe is not None and not preempted:
            start = time.time()
            metrics[progress.QUALITY_KEY] = probe.measure(trainer.G_ema)
            metrics["quality/seconds"] = time.time() - start  # what the measurement cost this snapshot
        if rank == 0:
            history.add(metrics)
            trainer.extra["progress"] = history.rows
            callbacks.on_tick(trainer, metrics)
        if snapshot:
            trainer.consolidate()
            checkpoint = None
            if rank == 0:
                d = ckpt_io.staging_dir()  # Ray Train deletes it once uploaded
                corrupt = ray.get(counter.report.remote()) if counter is not None else []
                trainer.extra["corrupt_samples"] = corrupt
                ckpt_io.save(trainer, d)
                _publish_progress(history, d, loop_config.get("run_dir"))
                ckpt_io.write_corrupt(d, corrupt)
                if not preempted:  # the notice leaves no time for metrics or registry uploads
                    metrics.update(callbacks.on_snapshot(trainer, d, metrics) or {})
                ckpt_io.write_meta(d, metrics)
                checkpoint = ray.train.Checkpoint.from_directory(d)
            # Regular snapshots upload in the background; the preemption checkpoint must be stored before the node
            # goes, and the last one before the run ends (Ray waits for background uploads at the end anyway).
            mode = ray.train.CheckpointUploadMode.SYNC if preempted or done else ray.train.CheckpointUploadMode.ASYNC
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=ckpt_io.dir_name(trainer.cur_nimg),
                             checkpoint_upload_mode=mode, delete_local_checkpoint_after_upload=True)
        else:
            ray.train.report(metrics)
        tick_start_nimg, tick_start_time = trainer.cur_nimg, time.time()
    if preempted:
        # The checkpoint is stored (the driver prints "preemption notice: ..."): wait for Ray Train to stop this
        # worker group when the node goes (or at the notice's deadline) and to resume the run elsewhere. Training on
        # would only add steps the resumed run repeats.
        while True:
            time.sleep(1)
    callbacks.on_end(trainer)
