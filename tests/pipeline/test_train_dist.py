"""Gradient averaging across workers (docs/algorithm.md "Training phases"): two gloo processes, each with half of the batch, end
each phase with the same gradients as one process averaging the two halves' gradients — also for the
lazy R1 phase and with per-phase requires_grad — and stay in lockstep after full steps."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.training.trainer import Trainer
from tests.pipeline.train_toys import ToyD, ToyG, toy_config

PHASES = ("Gmain", "Dmain", "Dreg")


def _batch():
    g = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, [8, 3, 16, 16], dtype=torch.uint8, generator=g)
    z = torch.randn([len(PHASES), 8, 8], generator=g)
    return img, z


def _phase_grads(trainer: Trainer, img: torch.Tensor, z: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    real = (img.float() / 127.5 - 1,)
    c = torch.zeros([img.shape[0], 0])
    out = {}
    for i, (name, module, opt, gain) in enumerate(trainer.phases()):
        trainer.phase_gradients(name, module, opt, gain, real, (c,), z[i], c)
        out[name] = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]
    return out


def _nets():
    torch.manual_seed(0)
    return ToyG(), ToyD()


def _worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        img, z = _batch()
        G, D = _nets()
        t = Trainer(toy_config(run={"workers": 2}), G, D, rank=rank, world_size=2)
        half = slice(4 * rank, 4 * rank + 4)
        grads = _phase_grads(t, img[half], z[:, half])
        t.step(img[half], torch.zeros([4, 0]), latents=[(z[i, half], torch.zeros([4, 0])) for i in range(3)])
        params = [p.detach().clone() for p in list(G.parameters()) + list(D.parameters())]
        torch.save({"grads": grads, "params": params}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_process_gradients_equal_single_process_average(tmp_path):
    out = str(tmp_path / "grads")
    mp.spawn(_worker, args=(str(tmp_path / "store"), out), nprocs=2, join=True)
    r0, r1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")

    img, z = _batch()
    G, D = _nets()
    single = Trainer(toy_config(schedule={"batch": 4}), G, D)
    halves = [_phase_grads(single, img[h], z[:, h]) for h in (slice(0, 4), slice(4, 8))]
    for name in PHASES:
        assert len(r0["grads"][name]) > 0
        for a, b, h0, h1 in zip(r0["grads"][name], r1["grads"][name], halves[0][name], halves[1][name]):
            torch.testing.assert_close(a, b)  # every worker holds the same averaged gradient
            torch.testing.assert_close(a, (h0 + h1) / 2, rtol=1e-5, atol=1e-7)
    for a, b in zip(r0["params"], r1["params"]):  # after a full step the replicas are identical
        torch.testing.assert_close(a, b)
