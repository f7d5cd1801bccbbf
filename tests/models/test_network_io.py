"""Network files: our safetensors format round trip; official-pickle import without running code;
refusal of malicious or unsupported pickles (docs/algorithm.md "Network pickles")."""

from __future__ import annotations

import copy
import os
import pickle
import sys

import pytest
import torch

import models
from models.network_io import NetworkFileError

from .official_layout import fake_official_modules, write_official_snapshot

SMALL = dict(channel_base=512, channel_max=8, z_dim=8, w_dim=8)


def _nets(preset="stylegan3-t", seed=0, **kw):
    torch.manual_seed(seed)
    cfg = models.build_config(preset, 16, **{**SMALL, **kw})
    G, D = models.build_from_config(cfg)
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for p in G_ema.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        G_ema.mapping.w_avg.normal_()
        getattr(G_ema.synthesis, G_ema.synthesis.layer_names[2]).magnitude_ema.fill_(0.37)
    return cfg, G, D, G_ema


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def test_our_format_round_trip_bit_exact(tmp_path):
    cfg, G, D, G_ema = _nets("stylegan3-r", c_dim=2, img_channels=1)
    path = models.save_network(tmp_path / "net.safetensors", G=G, D=D, G_ema=G_ema, config=cfg,
                               extra={"kimg": 12.5, "note": "x"})
    net = models.load_network(path)
    assert net.config == cfg and net.extra == {"kimg": 12.5, "note": "x"} and net.source == "stylegan3-ray/network"
    for a, b in ((G, net.G), (D, net.D), (G_ema, net.G_ema)):
        _assert_same_state(a, b)
    assert not any(p.requires_grad for p in net.G.parameters()) and not net.G.training
    # Same file contents through bytes; only G_ema saved -> G and D are None.
    blob = models.network_to_bytes(G_ema=G_ema)           # config travels with the modules
    only = models.load_network(blob)
    assert only.G is None and only.D is None and only.config == cfg and only.config.preset == "stylegan3-r"
    _assert_same_state(G_ema, only.G_ema)
    z, c = torch.randn(2, 8), torch.eye(2)
    with torch.no_grad():
        assert torch.equal(G_ema(z, c), only.G_ema(z, c))
    assert not list(tmp_path.glob(".*tmp*"))                      # atomic write leaves no temp file


def test_our_format_errors(tmp_path):
    cfg, G, D, _ = _nets()
    other = models.build_config("stylegan3-t", 16, channel_base=512, channel_max=16, z_dim=8, w_dim=8)
    with pytest.raises(ValueError, match="differs from config"):
        models.save_network(tmp_path / "x.safetensors", G=G, config=other)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        models.load_network(tmp_path / "missing.safetensors")
    (tmp_path / "junk.bin").write_bytes(b"hello world, not a network")
    with pytest.raises(NetworkFileError, match="neither"):
        models.load_network(tmp_path / "junk.bin")
    from safetensors.torch import save as st_save
    with pytest.raises(NetworkFileError, match="not a stylegan3-ray network"):
        models.load_network(st_save({"a": torch.zeros(2)}))


def test_official_pickle_import_round_trip(tmp_path):
    marker = tmp_path / "module_src_was_executed"
    cfg, G, D, G_ema = _nets()
    data = write_official_snapshot(G, D, G_ema, marker=str(marker),
                                   training_set_kwargs={"class_name": "training.dataset.ImageFolderDataset",
                                                        "path": "/data/x.zip", "resolution": 16,
                                                        "use_labels": False})
    assert b"torch_utils.persistence" in data and b"_reconstruct_persistent_obj" in data
    assert b"_load_from_bytes" in data and b"_rebuild_parameter" in data and b"EasyDict" in data
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(data)
    net = models.load_network(path)
    assert not marker.exists()                                   # the embedded source never ran
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    assert net.source == "official-pickle" and net.config.preset == "stylegan3-t"
    assert net.config.G == cfg.G and net.config.D == cfg.D
    for a, b in ((G, net.G), (D, net.D), (G_ema, net.G_ema)):
        _assert_same_state(a, b)
    assert net.extra["training_set_kwargs"]["path"] == "/data/x.zip"
    z = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(G_ema(z, None), net.G_ema(z, None))


def test_official_pickle_config_r_conditional():
    cfg, G, D, G_ema = _nets("stylegan3-r", c_dim=3, img_channels=4)
    net = models.load_network(write_official_snapshot(G, None, G_ema))
    assert net.D is None and net.config.preset == "stylegan3-r" and net.config.G == cfg.G
    _assert_same_state(G_ema, net.G_ema)


def test_official_pickle_unknown_constructor_argument_is_refused():
    _, G, _, _ = _nets()
    data = write_official_snapshot(G, g_kwargs_override={"fancy_new_option": 3})
    with pytest.raises(NetworkFileError, match="fancy_new_option"):
        models.load_network(data)


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _LoadFromBytes:
    """A reduce record calling torch.storage._load_from_bytes on an arbitrary blob."""

    def __init__(self, blob):
        self.blob = blob

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.blob,))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps({"G": _RunsCommand(marker)}, protocol=4)
    with pytest.raises(NetworkFileError, match=r"(posix|os)\.system"):
        models.load_network(data)
    assert not marker.exists()
    # The same payload hidden inside a tensor-storage blob (what torch.load would have executed).
    inner = pickle.dumps(_RunsCommand(marker), protocol=2)
    data = pickle.dumps({"G": _LoadFromBytes(inner)}, protocol=4)
    with pytest.raises(NetworkFileError, match=r"(posix|os)\.system"):
        models.load_network(data)
    assert not marker.exists()


def test_tensorflow_and_foreign_objects_are_refused():
    class Network:  # stands for dnnlib.tflib.network.Network of TF-era pickles
        pass

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    with fake_official_modules({"dnnlib.tflib": {}, "dnnlib.tflib.network": {"Network": Network}}):
        data = pickle.dumps({"G": Network()}, protocol=4)
    with pytest.raises(NetworkFileError, match="TensorFlow"):
        models.load_network(data)
    with pytest.raises(NetworkFileError, match="top-level object is a list"):
        models.load_network(pickle.dumps([1, 2], protocol=4))
    with pytest.raises(NetworkFileError, match="builtins.dict|collections.Counter"):
        import collections
        models.load_network(pickle.dumps({"G": collections.Counter()}, protocol=4))
