"""One worker's training step: all loss phases, gradient averaging over workers, EMA, ADA (docs/algorithm.md "Training").

`Trainer` holds one worker's state and runs one training step on a batch of reals; it needs no Ray and works with or
without `torch.distributed`. The Ray Train loop that drives it is `pipeline.training.loop`; the driver side that
launches the loop is `pipeline.training.launch`.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pipeline.training.ada import AdaController
from pipeline.training.config import TrainConfig
from pipeline.training.ema import ema_beta, update_ema
from pipeline.training.loss import StyleGAN2Loss

# Statistics averaged over a tick and over workers; names are those of the reported metrics.
_STAT_KEYS = ("G_loss", "D_loss_fake", "D_loss_real", "r1_penalty", "logits_fake", "logits_real", "signs_real")


def derived_seed(seed: int, rank: int, cur_nimg: int) -> int:
    """Seed for a worker's RNGs from (seed, rank, cur_nimg): a resumed run draws what an unbroken one would."""
    h = hashlib.sha256(f"{seed}/{rank}/{cur_nimg}".encode()).digest()
    return int.from_bytes(h[:4], "little")


class Trainer:
    """One worker's training state and step (docs/algorithm.md "Training"). No Ray needed.

    cfg: a resolved TrainConfig. G, D: built networks (moved to `device`). rank/world_size: this
    worker's place in the torch.distributed group (world_size 1 = single process, no communication).
    labels: the whole data set's label distribution for conditional runs, (values [K, c_dim] float32,
    counts [K]) (`pipeline.data.label_distribution`); fake labels are drawn from it, as the official loop
    draws the labels of random training images (docs/algorithm.md "Training phases"). None: drawn from the current real batch (a
    stand-in for sets whose manifest predates label counts; biased with small per-worker batches).
    """

    def __init__(self, cfg: TrainConfig, G: torch.nn.Module, D: torch.nn.Module,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                 labels: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.cfg, self.device, self.rank, self.world_size = cfg, torch.device(device), rank, world_size
        self.G = G.to(self.device).train().requires_grad_(False)
        self.D = D.to(self.device).train().requires_grad_(False)
        if labels is not None:
            values, counts = labels
            self.label_values = torch.as_tensor(values, dtype=torch.float32).to(self.device)
            self.label_probs = torch.as_tensor(counts, dtype=torch.float64) / float(sum(counts))
        else:
            self.label_values = self.label_probs = None
        self.G_ema = copy.deepcopy(self.G).eval()
        o = cfg.optim
        self.G_opt = torch.optim.Adam(self.G.parameters(), lr=o.glr, betas=(o.beta1, o.beta2), eps=o.eps)
        # Lazy regularisation (docs/algorithm.md "Training phases"): mb_ratio = k/(k+1) scales D's lr and exponentiates its betas.
        k = o.d_reg_interval
        mb = k / (k + 1)
        self.D_opt = torch.optim.Adam(self.D.parameters(), lr=o.dlr * mb,
                                      betas=(o.beta1 ** mb, o.beta2 ** mb), eps=o.eps)
        # ADA (docs/algorithm.md "ADA"): the controller owns the "bgc" pipe (None for noaug) and drives its p.
        a = cfg.aug
        self.ada = AdaController(a.mode, fixed_p=a.p, target=a.target, interval=a.interval, ada_kimg=a.ada_kimg)
        self.augment_pipe = self.ada.pipe.to(self.device).train().requires_grad_(False) if self.ada.pipe else None
        self.loss = StyleGAN2Loss(self.G, self.D, self.augment_pipe, r1_gamma=cfg.loss.gamma,
                                  blur_init_sigma=cfg.loss.blur_init_sigma, blur_fade_kimg=cfg.loss.blur_fade_kimg)
        self.cur_nimg = 0  # real images shown to D so far, over all workers
        self.batch_idx = 0  # training steps so far
        self.cur_tick = 0
        self.data_pass = 0  # data position: the pass over the data set that cur_nimg falls in (counted in images)
        self.extra: dict[str, Any] = {}  # free slot persisted in checkpoints (e.g. the MLflow run id)
        self.generator = torch.Generator(device="cpu")
        self.reset_stats()
        self.seed_rngs()

    # -- setup --------------------------------------------------------------------------------------
    def seed_rngs(self) -> None:
        """Re-seed every RNG this worker uses from (seed, rank, cur_nimg) (latents, augmentations)."""
        s = derived_seed(self.cfg.run.seed, self.rank, self.cur_nimg)
        self.generator.manual_seed(s)
        torch.manual_seed(s)
        np.random.seed(s)

    @property
    def ada_p(self) -> float:
        """Current augmentation probability (0 for --aug noaug)."""
        return self.ada.p

    # -- the step -----------------------------------------------------------------------------------
    def phases(self) -> list[tuple[str, torch.nn.Module, torch.optim.Optimizer, float]]:
        """(name, module, optimizer, gain) for this step: Gmain, Dmain, and Dreg when batch_idx % k == 0."""
        out = [("Gmain", self.G, self.G_opt, 1.0), ("Dmain", self.D, self.D_opt, 1.0)]
        k = self.cfg.optim.d_reg_interval
        if self.batch_idx % k == 0:
            out.append(("Dreg", self.D, self.D_opt, float(k)))
        return out

    def draw_latents(self, real_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One phase's z [n, z_dim] ~ N(0, I) and labels of random training images [n, c_dim] (docs/algorithm.md "Training phases"):
        from the whole set's label distribution when the Trainer has it, else from the real batch `real_c`."""
        n = real_c.shape[0]
        z = torch.randn([n, self.cfg.model.z_dim], generator=self.generator).to(self.device)
        if self.label_probs is not None and real_c.shape[1]:
            # Labels of random images of the whole set: a class (or label vector) with its frequency.
            idx = torch.multinomial(self.label_probs, n, replacement=True, generator=self.generator)
            return z, self.label_values[idx.to(self.device)]
        idx = torch.randint(0, n, [n], generator=self.generator)
        return z, real_c[idx.to(real_c.device)]

    def step(self, real_img: torch.Tensor, real_c: torch.Tensor,
             latents: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """One training step on this worker's share of the global batch.

        real_img: [batch/workers, C, H, W] uint8; real_c: [batch/workers, c_dim] float32.
        latents: optional (z, c) per phase (tests); default drawn from this worker's generator.
        Updates G, D, G_ema, cur_nimg (+= global batch), batch_idx, ADA p; accumulates tick statistics.
        """
        cfg = self.cfg
        real = (real_img.to(self.device, torch.float32) / 127.5 - 1).split(cfg.forward_batch)
        real_c = real_c.to(self.device, torch.float32)
        real_cs = real_c.split(cfg.forward_batch)
        for i, (name, module, opt, gain) in enumerate(self.phases()):
            z, c = latents[i] if latents is not None else self.draw_latents(real_c)
            self.phase_gradients(name, module, opt, gain, real, real_cs, z, c)
            opt.step()
        # G EMA after the optimizer steps, before cur_nimg advances (docs/algorithm.md "Generator EMA").
        s = cfg.schedule
        update_ema(self.G_ema, self.G, ema_beta(s.batch, s.ema_kimg, self.cur_nimg, s.ema_rampup))
        self.cur_nimg += s.batch
        self.batch_idx += 1
        self.ada.step(s.batch, reduce=self._reduce)

    def phase_gradients(self, name: str, module: torch.nn.Module, opt: torch.optim.Optimizer, gain: float,
                        real: tuple[torch.Tensor, ...], real_cs: tuple[torch.Tensor, ...],
                        z: torch.Tensor, c: torch.Tensor) -> None:
        """Leave the phase's gradient in module's .grad: zero grads, train only `module`, accumulate the
        losses of the forward passes (a sum of their means), average over workers and sanitise (docs/algorithm.md
        "Training phases"). real/real_cs: this worker's reals [-1, 1] and labels split into forward batches; z/c: the
        phase's latents."""
        cfg = self.cfg
        opt.zero_grad(set_to_none=True)
        module.requires_grad_(True)
        for r, rc, zz, cc in zip(real, real_cs, z.split(cfg.forward_batch), c.split(cfg.forward_batch)):
            stats = self.loss.accumulate_gradients(name, r, rc, zz, cc, gain, self.cur_nimg)
            self._add_stats(stats)
            if "signs_real" in stats:  # Dmain and Dreg real passes drive ADA (docs/algorithm.md "Loss", "ADA")
                self.ada.observe(stats["logits_real"])
        module.requires_grad_(False)
        self.sync_grads(module)

    def sync_grads(self, module: torch.nn.Module) -> None:
        """Average gradients over workers (one flat all-reduce), then NaN → 0, ±inf → ±1e5 (docs/algorithm.md "Training phases")."""
        params = [p for p in module.parameters() if p.grad is not None]
        if not params:
            return
        flat = torch.cat([p.grad.flatten() for p in params])
        if self.world_size > 1:
            dist.all_reduce(flat)
            flat /= self.world_size
        torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.reshape(p.shape))

    # -- statistics ---------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        # Per key: the sum on the device (a forward pass's statistics are added without the host waiting for the
        # device) and the count on the host (sizes are known without reading anything). Read once per tick.
        self._sums = torch.zeros(len(_STAT_KEYS), dtype=torch.float64, device=self.device)
        self._counts = [0] * len(_STAT_KEYS)

    def _add_stats(self, stats: dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            i = _STAT_KEYS.index(k)
            self._sums[i] += v.detach().sum(dtype=torch.float64)
            self._counts[i] += v.numel()

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of `t` over workers (a copy, on this worker's device: NCCL reduces device tensors only)."""
        t = t.to(self.device, copy=True)
        if self.world_size > 1:
            dist.all_reduce(t)
        return t

    def tick_stats(self) -> dict[str, float]:
        """Means over this tick and all workers of the loss statistics (NaN when a phase did not run); the one
        place the step's statistics are read back from the device."""
        counts = torch.tensor(self._counts, dtype=torch.float64, device=self.device)
        sums, counts = self._reduce(torch.stack([self._sums, counts])).tolist()
        out = {}
        for i, k in enumerate(_STAT_KEYS):
            n = counts[i]
            out[k] = sums[i] / n if n else float("nan")
        out["D_loss"] = out["D_loss_fake"] + out["D_loss_real"]
        self.reset_stats()
        return out

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything but the network weights: optimizers, counters, ADA p, RNGs, data position, config."""
        return {
            "G_opt": self.G_opt.state_dict(), "D_opt": self.D_opt.state_dict(),
            "cur_nimg": self.cur_nimg, "batch_idx": self.batch_idx, "cur_tick": self.cur_tick,
            "ada": self.ada.state_dict(),
            "data_pass": self.data_pass,
            "rng": {"generator": self.generator.get_state(), "torch": torch.get_rng_state(),
                    "numpy_seed_rule": "derived_seed(seed, rank, cur_nimg)"},
            "config": self.cfg.to_dict(), "extra": dict(self.extra),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G_opt.load_state_dict(state["G_opt"])
        self.D_opt.load_state_dict(state["D_opt"])
        self.cur_nimg, self.batch_idx, self.cur_tick = state["cur_nimg"], state["batch_idx"], state["cur_tick"]
        ada = dict(state["ada"])
        if self.rank != 0:  # the checkpoint holds the pending sign sums of all workers (see consolidate)
            ada.update(sign_sum=0.0, sign_count=0.0)
        self.ada.load_state_dict(ada)
        self.data_pass = state["data_pass"] if "data_pass" in state else state["data_epoch"]  # earlier name
        self.extra = dict(state.get("extra", {}))
        # The checkpoint was written right after a re-seed from (seed, rank, cur_nimg): re-seeding here
        # restores every worker's RNGs (rank 0's saved states are the same values, kept for inspection).
        self.seed_rngs()

    def consolidate(self) -> None:
        """Before a checkpoint (all workers call it): re-seed RNGs from (seed, rank, cur_nimg) and gather
        the partial ADA sign sums on rank 0, so the rank-0 state describes the whole group."""
        self.seed_rngs()
        ada = self.ada.state_dict()
        pending = self._reduce(torch.tensor([ada["sign_sum"], ada["sign_count"]], dtype=torch.float64)).cpu()
        # Rank 0 holds the group's pending sums, the others none: the next all-reduce sees the same total.
        ada.update(sign_sum=float(pending[0]) if self.rank == 0 else 0.0,
                   sign_count=float(pending[1]) if self.rank == 0 else 0.0)
        self.ada.load_state_dict(ada)
