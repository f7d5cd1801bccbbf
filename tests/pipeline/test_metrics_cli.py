"""`python -m pipeline.metrics` on a tiny saved StyleGAN3-T and the bundled demo shards (real Ray Data reader)."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.metrics.__main__ import main

models = pytest.importorskip("models")


class MeanColourDetector(torch.nn.Module):
    """Stand-in for Inception with its calling convention: uint8 NCHW -> [N, 12] features."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x.to(torch.float32) / 255, 2).flatten(1)


@pytest.fixture(scope="module")
def network_file(tmp_path_factory):
    torch.manual_seed(0)
    G, D = models.build("stylegan3-t", 32, channel_base=1024, channel_max=32, z_dim=32, w_dim=32, map_depth=2)
    return str(models.save_network(tmp_path_factory.mktemp("net") / "net.safetensors", G=G, D=D, G_ema=G))


def test_cli_table_json_cache_and_spectrum(network_file, ray_local, tmp_path, capsys):
    from pipeline.data import ensure_demo_shards

    uri = ensure_demo_shards(tmp_path / "data", 32, max_images=24, progress=False)
    detector = tmp_path / "detector.pt"
    torch.jit.save(torch.jit.script(MeanColourDetector()), str(detector))
    out_json, png, cache = tmp_path / "m.json", tmp_path / "spectrum.png", tmp_path / "cache"
    rc = main(["--model", network_file, "--metrics", "eqt,swd,fid,kid", "--data", uri, "--num", "2",
               "--batch", "2", "--detector", str(detector), "--cache-dir", str(cache), "--spectrum", str(png),
               "--json", str(out_json), "--no-progress", "--device", "cpu"])
    text = capsys.readouterr().out
    assert rc == 0, text
    for name in ("eqt", "swd", "swd_32", "swd_16", "fid", "kid"):
        assert any(line.split()[:1] == [name] for line in text.splitlines()), (name, text)
    results = json.loads(out_json.read_text())["results"]
    assert results["eqt"] > 40  # StyleGAN3-T at random init is translation-equivariant by construction
    assert results["swd"] > 0 and results["fid"] > 0
    assert len(list(cache.glob("real-stats-*.npz"))) == 1
    assert png.read_bytes()[:4] == b"\x89PNG"

    # No detector: FID is skipped with one line, the run still succeeds.
    rc = main(["--model", network_file, "--metrics", "fid", "--data", uri, "--num", "2", "--batch", "2",
               "--detector", str(tmp_path / "missing.pkl"), "--no-progress", "--device", "cpu"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "FID/KID skipped" in text and "skipped" in [line.split()[1] for line in text.splitlines()
                                                       if line.startswith("fid")]


def test_cli_errors_are_clear(network_file, tmp_path, capsys):
    assert main(["--model", network_file, "--metrics", "eqt,fidd"]) == 2
    assert "unknown metric 'fidd'" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "none.safetensors"), "--metrics", "eqt"]) == 2
    assert "none.safetensors" in capsys.readouterr().err
    assert main(["--model", network_file, "--metrics", "swd", "--num", "2"]) == 2
    assert "need real images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--detector" in capsys.readouterr().out
