"""Issue 20's options and the quality curve, in one process without Ray: --fp32, --freezed, fake labels from the
whole set's label distribution, no host-device synchronisation per chunk, the --gamma note, and the default
quality probe (SWD on fixed reals) with progress.png. Tiny networks at 16x16."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from pipeline.train import make_parser
from pipeline.training.flags import config_from_args, gamma_note
from pipeline.training.config import TrainConfig
from pipeline.training.loop import build_networks
from pipeline.training.trainer import Trainer
from tests.pipeline.train_toys import ToyD, ToyG, toy_config


def _tiny(**sections) -> TrainConfig:
    return toy_config(model={"z_dim": 8, "w_dim": 8, "cbase": 256, "cmax": 16, **sections.pop("model", {})},
                      **sections)


# -- --fp32 and --freezed ---------------------------------------------------------------------------

def test_fp32_and_freezed_flags_reach_the_config_and_the_networks():
    a = make_parser().parse_args(["--data", "x", "--fp32", "1", "--freezed", "3"])
    cfg = config_from_args(a)
    assert cfg.model.fp32 is True and cfg.model.freezed == 3
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # what the workers receive
    G, D = build_networks(_tiny(model={"fp32": True}))
    assert (G.cfg.num_fp16_res, G.cfg.conv_clamp, D.cfg.num_fp16_res, D.cfg.conv_clamp) == (0, None, 0, None)
    G, D = build_networks(_tiny())
    assert (G.cfg.num_fp16_res, G.cfg.conv_clamp, D.cfg.num_fp16_res, D.cfg.conv_clamp) == (4, 256, 4, 256)


def test_freezed_layers_get_no_update_and_no_optimizer_state():
    """--freezed 3 at 16x16: b16.fromrgb, b16.conv0, b16.conv1 (the first three conv layers from the highest
    resolution, docs/algorithm.md "Discriminator") are buffers: after a step their values are unchanged, every other D parameter moved."""
    cfg = _tiny(model={"freezed": 3})
    _, D = build_networks(cfg)
    _, D_free = build_networks(_tiny())
    assert set(D.state_dict()) == set(D_free.state_dict())
    frozen = {"b16.fromrgb.weight", "b16.fromrgb.bias", "b16.conv0.weight", "b16.conv0.bias",
              "b16.conv1.weight", "b16.conv1.bias"}
    params = dict(D.named_parameters())
    assert frozen.isdisjoint(params) and "b16.skip.weight" in params
    before = {k: v.clone() for k, v in D.state_dict().items()}
    torch.manual_seed(0)
    t = Trainer(cfg, ToyG(), D)
    t.step(torch.randint(0, 256, [8, 3, 16, 16], dtype=torch.uint8), torch.zeros([8, 0]))
    after = D.state_dict()
    for k in frozen:
        assert torch.equal(before[k], after[k]), k
    for k in params:
        assert not torch.equal(before[k], after[k]), f"{k} did not move"
    optimized = {id(p) for g in t.D_opt.param_groups for p in g["params"]}
    assert optimized == {id(p) for p in D.parameters()} and len(t.D_opt.state) == len(params)
    # A frozen D still loads an unfrozen one's weights and vice versa (same keys): --resume and --freezed combine.
    D_free.load_state_dict(D.state_dict())


# -- fake labels ------------------------------------------------------------------------------------

def _labelled_set(tmp_path: Path, counts: dict[str, int]) -> str:
    from pipeline.data import BuildOptions, build

    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (src / cls).mkdir(parents=True)
        for i in range(n):
            PIL.Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(src / cls / f"{i}.png")
    dest = str(tmp_path / "set")
    build(str(src), dest, BuildOptions(labels="folders", workers=1, shard_size=16), progress=False)
    return dest


def test_fake_labels_follow_the_whole_sets_frequencies_not_the_batch(tmp_path):
    from pipeline.data import dataset_info, label_distribution

    uri = _labelled_set(tmp_path, {"a": 18, "b": 5, "c": 1})  # skewed: 75% / 21% / 4%
    info = dataset_info(uri)
    values, counts = label_distribution(info)
    np.testing.assert_array_equal(values, np.eye(3, dtype=np.float32))
    assert counts.tolist() == [18, 5, 1] and info.c_dim == 3
    cfg = toy_config(model={"c_dim": 3}, data={"cond": True})
    t = Trainer(cfg, ToyG(c_dim=3), ToyD(), labels=(torch.tensor(values), torch.tensor(counts)))
    batch_c = torch.eye(3)[[2] * 8]  # a batch holding only the rarest class
    drawn = Counter()
    for _ in range(500):
        _, c = t.draw_latents(batch_c)
        assert c.shape == (8, 3) and torch.all(c.sum(1) == 1)
        drawn.update(c.argmax(1).tolist())
    freq = np.array([drawn[k] for k in range(3)]) / 4000
    np.testing.assert_allclose(freq, [18 / 24, 5 / 24, 1 / 24], atol=0.025)
    # Without the distribution (an older manifest) the labels come from the batch, as before.
    _, c = Trainer(cfg, ToyG(c_dim=3), ToyD()).draw_latents(batch_c)
    assert torch.all(c.argmax(1) == 2)


# -- no host-device synchronisation per chunk -------------------------------------------------------

_READS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")


class Reads(Counter):
    """Calls that read a tensor's value back to the host (on a GPU each waits for the device), by method name;
    `tensors` holds the ids of the tensors read."""

    def __init__(self):
        super().__init__()
        self.tensors: list[int] = []

    def clear(self):
        super().clear()
        self.tensors.clear()

    def excluding(self, ids: set[int]) -> int:
        return sum(1 for t in self.tensors if t not in ids)


@pytest.fixture
def count_reads(monkeypatch):
    calls = Reads()
    for name in _READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, _name=name, _original=original, **k):
            calls[_name] += 1
            calls.tensors.append(id(self))
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


def test_step_reads_nothing_back_per_chunk_and_the_tick_reads_once(count_reads):
    cfg = toy_config(schedule={"batch": 8, "forward_batch": 4})  # two forward passes per phase
    t = Trainer(cfg, ToyG(), ToyD())
    img, c = torch.randint(0, 256, [8, 3, 16, 16], dtype=torch.uint8), torch.zeros([8, 0])
    count_reads.clear()
    for _ in range(3):  # step 0 runs all three phases (Dreg too)
        t.step(img, c)
    # Adam reads its step counters (.item()); torch keeps them on the CPU even for GPU parameters (neither
    # capturable nor fused), so those reads never wait for a device. Nothing else may be read.
    steps = {id(s["step"]) for opt in (t.G_opt, t.D_opt) for s in opt.state.values()}
    assert len(steps) == 8 and count_reads.excluding(steps) == 0, dict(count_reads)
    assert all(s["step"].device.type == "cpu" for opt in (t.G_opt, t.D_opt) for s in opt.state.values())
    count_reads.clear()
    stats = t.tick_stats()
    assert sum(count_reads.values()) == 1 and np.isfinite(stats["r1_penalty"])  # one read per tick


def test_ada_observes_without_reading_and_reads_once_per_adjustment(count_reads):
    from pipeline.training.ada import AdaController

    ada = AdaController("ada", interval=4, ada_kimg=1)
    count_reads.clear()
    for i in range(1, 5):
        for _ in range(3):  # chunks
            ada.observe(torch.ones(4, 1))
        ada.step(8)
        assert sum(count_reads.values()) == (1 if i == 4 else 0)
    assert ada.p > 0


# -- --gamma ------------------------------------------------------------------------------------------

def test_gamma_default_is_announced_and_help_names_the_papers_values():
    assert "default 2*(res/256)^2" in gamma_note(None) and "requires --gamma" in gamma_note(None)
    assert gamma_note(8.0) == ""
    (action,) = [a for a in make_parser()._actions if "--gamma" in a.option_strings]
    for text in ("official tool requires it", "2 at 256x256", "6.6-8.2", "16.4"):
        assert text in action.help


# -- quality over time --------------------------------------------------------------------------------

class ReplayG(torch.nn.Module):
    """A 'generator' whose images are the given reals, in order (uint8 [N, C, H, W])."""

    def __init__(self, reals: torch.Tensor):
        super().__init__()
        self.reals = reals.float() / 127.5 - 1
        self.z_dim, self.c_dim, self.next = 4, 0, 0
        self.synthesis = lambda ws: ws
        self.p = torch.nn.Parameter(torch.zeros([]))

    def mapping(self, z, c, truncation_psi=1):
        out = self.reals[self.next:self.next + len(z)]
        self.next += len(z)
        return out


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from pipeline.data import dataset_info, ensure_demo_shards

    return dataset_info(ensure_demo_shards(tmp_path_factory.mktemp("q"), 16, max_images=48, progress=False))


def test_quality_probe_is_zero_for_the_reals_positive_for_noise_and_cached(tiny_set, tmp_path):
    from pipeline.training import progress

    probe = progress.QualityProbe(tiny_set, num_images=32, cache_dir=tmp_path)
    reals = progress.first_images(tiny_set, 32)
    assert reals.shape == (32, 3, 16, 16) and reals.dtype == torch.uint8
    same = probe.measure(ReplayG(reals))
    noise = probe.measure(ReplayG(torch.randint(0, 256, reals.shape, dtype=torch.uint8)))
    assert 0 <= same < 0.05 * noise, (same, noise)  # ~0 up to the cache's fp16 rounding
    (cached,) = tmp_path.glob("quality-swd-*.pt")
    again = progress.QualityProbe(tiny_set, num_images=32, cache_dir=tmp_path)
    assert again.measure(ReplayG(reals)) == same  # the cached descriptors, not a new read
    torch.manual_seed(0)
    G, _ = build_networks(_tiny())
    assert probe.measure(G) > 10 * same  # an untrained generator is far from the data


def test_history_survives_resume_and_progress_png_draws(tmp_path):
    from pipeline.training import progress

    h = progress.History()
    for k in (0.008, 0.016, 0.024):
        h.add({"kimg": k, "loss/G_loss": 1.0, "loss/D_loss": 1.3, "loss/r1_penalty": float("nan"),
               **({progress.QUALITY_KEY: 100 * k} if k != 0.016 else {}), "ada_p": 0.1})
    h2 = progress.History(h.rows[:1])  # resumed from the first checkpoint: the later ticks are replaced
    h2.add({"kimg": 0.016, "loss/G_loss": 0.9, "loss/D_loss": 1.2})
    assert [r["kimg"] for r in h2.rows] == [0.008, 0.016] and h.quality() == [(0.008, 0.8), (0.024, 2.4)]
    png = progress.render(h, np.zeros((32, 64, 3), dtype=np.uint8))
    img = PIL.Image.open(io.BytesIO(png))
    assert img.size == (1100, 500)
    torch.save({"extra": {"progress": h.rows}}, tmp_path / "s.pt")  # travels in a checkpoint's state.pt
    assert torch.load(tmp_path / "s.pt", weights_only=True)["extra"]["progress"] == h.rows


def test_tick_line_shows_the_metric_at_snapshots():
    from pipeline.training.launch import progress_line

    m = {"tick": 3, "kimg": 0.024, "total_kimg": 0.2, "sec_per_kimg": 100.0, "loss/G_loss": 1.0,
         "loss/D_loss": 1.3, "loss/r1_penalty": float("nan"), "ada_p": 0.0, "img_per_s": 10.0, "peak_mem_gb": 1.0}
    assert "SWD" not in progress_line(m)
    assert "SWD 123.4" in progress_line({**m, "quality/swd": 123.44})


def test_quality_probe_of_a_conditional_generator_draws_the_sets_labels(tiny_set, monkeypatch):
    from pipeline.metrics import core
    from pipeline.training import progress

    seen = []
    original = core.generate_images

    def spy(G, num, **kw):
        c = kw["c_sampler"](1000, torch.Generator().manual_seed(0))
        seen.append(c.argmax(1).bincount(minlength=3).tolist())
        return original(G, num, **kw)

    monkeypatch.setattr(core, "generate_images", spy)
    G, _ = build_networks(_tiny(model={"c_dim": 3}))
    probe = progress.QualityProbe(tiny_set, num_images=16, labels=([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [0, 9, 1]))
    assert probe.measure(G) > 0
    (counts,) = seen
    assert counts[0] == 0 and counts[1] > 5 * counts[2] > 0  # the set's frequencies: none, 90%, 10%
