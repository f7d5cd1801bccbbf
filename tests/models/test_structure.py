"""Architecture against the official networks: parameter counts, per-layer schedule and state_dict
keys / kinds / shapes / order (tests/models/data/stylegan3-tables.txt). Built on the meta device."""

from __future__ import annotations

import pytest
import torch

import models
from models.config import build_config, magnitude_ema_beta_for_batch
from models.generator import synthesis_schedule

from .tables import load_tables

CASES = [("stylegan3-t", 256), ("stylegan3-t", 1024), ("stylegan3-r", 256), ("stylegan3-r", 1024)]


def _listing(module: torch.nn.Module) -> list:
    params = {id(p) for p in module.parameters()}
    out = []
    for key, t in module.state_dict(keep_vars=True).items():
        out.append((key, "param" if id(t) in params else "buffer", tuple(t.shape), str(t.dtype).replace("torch.", "")))
    return out


def test_tables_parsed():
    tables = load_tables()
    assert set(tables) == set(CASES)
    for sec in tables.values():
        assert len(sec.schedule) == 15 and len(sec.g_state) == 114
    assert len(tables[("stylegan3-t", 256)].d_state) == 64


@pytest.mark.parametrize("preset,res", CASES)
def test_parameter_counts_and_state_dict(preset, res):
    sec = load_tables()[(preset, res)]
    G, D = models.build(preset, res, device="meta")
    assert sum(p.numel() for p in G.parameters()) == sec.summary["G_params"]
    assert sum(p.numel() for p in G.mapping.parameters()) == sec.summary["mapping"]
    assert sum(p.numel() for p in G.synthesis.parameters()) == sec.summary["synthesis"]
    assert sum(b.numel() for b in G.buffers()) == sec.summary["G_bufs"]
    assert sum(p.numel() for p in D.parameters()) == sec.summary["D_params"]
    assert sum(b.numel() for b in D.buffers()) == sec.summary["D_bufs"]
    assert G.num_ws == sec.summary["num_ws"]
    # Keys, kinds, shapes, dtypes and ORDER identical to the official state_dict.
    assert _listing(G) == sec.g_state
    assert len(D.state_dict()) == sec.summary["D_keys"]
    if sec.d_state:
        assert _listing(D) == sec.d_state


def test_exact_counts_from_issue():
    expected = {("stylegan3-t", 256): (28_472_133, 28_864_129), ("stylegan3-t", 1024): (22_313_167, 29_012_513),
                ("stylegan3-r", 256): (18_816_387, None), ("stylegan3-r", 1024): (15_093_151, None)}
    for (preset, res), (g_count, d_count) in expected.items():
        G, D = models.build(preset, res, device="meta")
        assert sum(p.numel() for p in G.parameters()) == g_count
        if d_count is not None:
            assert sum(p.numel() for p in D.parameters()) == d_count


@pytest.mark.parametrize("preset,res", CASES)
def test_schedule_matches_official(preset, res):
    sec = load_tables()[(preset, res)]
    sched = synthesis_schedule(build_config(preset, res).G)
    assert len(sched.layers) == len(sec.schedule)
    for spec, row in zip(sched.layers, sec.schedule):
        assert spec.name == row["name"]
        assert (spec.in_size, spec.out_size) == (int(row["in_size"]), int(row["out_size"]))
        assert (spec.in_channels, spec.out_channels) == (int(row["in_ch"]), int(row["out_ch"]))
        assert (spec.in_sampling_rate, spec.tmp_sampling_rate, spec.out_sampling_rate) == (
            float(row["sr_in"]), float(row["sr_tmp"]), float(row["sr_out"]))
        assert spec.in_cutoff == pytest.approx(float(row["fc_in"]), abs=1e-4)
        assert spec.out_cutoff == pytest.approx(float(row["fc_out"]), abs=1e-4)
        assert spec.in_half_width == pytest.approx(float(row["fh_in"]), abs=1e-4)
        assert spec.out_half_width == pytest.approx(float(row["fh_out"]), abs=1e-4)
        assert (spec.up, spec.down, spec.up_taps, spec.down_taps) == (
            int(row["up"]), int(row["down"]), int(row["up_taps"]), int(row["down_taps"]))
        assert int(spec.radial_down) == int(row["radial"])
        assert list(spec.padding) == [int(v) for v in row["padding"].split(",")]
        assert int(spec.is_critically_sampled) == int(row["crit"])
        assert int(spec.use_fp16) == int(row["fp16"])
        assert spec.kernel_size == int(row["k"])


def test_config_round_trip_and_overrides():
    cfg = build_config("stylegan3-r", 64, batch_size=16, channel_base=8192, channel_max=256, c_dim=5,
                       img_channels=1, map_depth=3, mbstd_group_size=2)
    assert cfg.G.channel_base == 16384 and cfg.G.channel_max == 512          # R doubles G's channels
    assert cfg.D.channel_base == 8192 and cfg.D.channel_max == 256           # ...but not D's
    assert cfg.G.conv_kernel == 1 and cfg.G.use_radial_filters
    assert cfg.G.magnitude_ema_beta == magnitude_ema_beta_for_batch(16) == 0.5 ** (16 / 20000)
    assert cfg.D.mbstd_group_size == 2 and cfg.G.map_depth == 3 and cfg.D.c_dim == 5 == cfg.G.c_dim
    import json
    again = models.NetworkConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    fp32 = build_config("stylegan3-t", 64, fp32=True)
    assert fp32.G.num_fp16_res == 0 == fp32.D.num_fp16_res and fp32.G.conv_clamp is None is fp32.D.conv_clamp
    with pytest.raises(ValueError, match="unknown override"):
        build_config("stylegan3-t", 64, chanel_base=1)
    with pytest.raises(ValueError, match="unknown preset"):
        build_config("stylegan2", 64)
    with pytest.raises(ValueError, match="unknown field"):
        models.GeneratorConfig.from_dict({"img_resolution": 64, "bogus": 1})
    # train.py's magnitude EMA decay at batch 32, as recorded in the official G_kwargs.
    assert build_config("stylegan3-t", 256).G.magnitude_ema_beta == pytest.approx(0.9988915792636801, abs=1e-15)


def test_conditional_and_channels_change_only_the_expected_entries():
    G0, D0 = models.build("stylegan3-t", 256, device="meta")
    G1, D1 = models.build("stylegan3-t", 256, device="meta", c_dim=10, img_channels=4)
    g0, g1 = G0.state_dict(), G1.state_dict()
    assert g1["mapping.embed.weight"].shape == (512, 10) and g1["mapping.fc0.weight"].shape == (512, 1024)
    assert g1["synthesis.L14_256_4.weight"].shape == (4, 128, 1, 1)
    assert len(g1) == len(g0) + 2
    d1 = D1.state_dict()
    assert d1["b256.fromrgb.weight"].shape == (128, 4, 1, 1)
    assert d1["mapping.embed.weight"].shape == (512, 10)
    assert [f"mapping.fc{i}.weight" in d1 for i in range(8)] == [True] * 8 and "mapping.fc8.weight" not in d1
    assert d1["b4.out.weight"].shape == (512, 512)      # projects onto cmap (cmap_dim = channels at 4x4)
