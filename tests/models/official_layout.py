"""Writes network pickles in the documented official snapshot layout (docs/algorithm.md "Snapshot contents", "Persistent classes") for tests.

Each module becomes a `torch_utils.persistence._reconstruct_persistent_obj(meta)` reduce record with
meta = {type: 'class', version: 6, module_src, class_name, state: the module's __dict__-like state}.
`module_src` is a dummy string of ours (never NVIDIA source): if anything ever executed it, it would
create `marker` - the tests assert that file never appears.
The fake `torch_utils` / `dnnlib` modules exist in sys.modules only while pickling.
"""

from __future__ import annotations

import collections
import contextlib
import pickle
import sys
import types

import numpy as np
import torch

from models.network_io import official_init_kwargs

OFFICIAL_CLASS_NAMES = {"ConditionMapping": "MappingNetwork"}


def _never_called(meta):  # stands in for the official reconstruct function when pickling
    raise AssertionError("the test writer's reconstruct function must never be called")


class _EasyDict(dict):
    pass


@contextlib.contextmanager
def fake_official_modules(extra_modules: dict | None = None):
    """Temporarily register torch_utils.persistence / dnnlib.util (and extras) so pickle can name them."""
    created = {}

    def module(name):
        m = types.ModuleType(name)
        created[name] = m
        return m

    persistence = module("torch_utils.persistence")
    _never_called.__module__, _never_called.__qualname__ = "torch_utils.persistence", "_reconstruct_persistent_obj"
    _never_called.__name__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _never_called
    module("torch_utils").persistence = persistence
    util = module("dnnlib.util")
    _EasyDict.__module__, _EasyDict.__qualname__, _EasyDict.__name__ = "dnnlib.util", "EasyDict", "EasyDict"
    util.EasyDict = _EasyDict
    module("dnnlib").util = util
    for name, attrs in (extra_modules or {}).items():
        m = module(name)
        for k, v in attrs.items():
            setattr(m, k, v)
    clash = [n for n in created if n in sys.modules]
    assert not clash, f"modules already imported: {clash}"
    sys.modules.update(created)
    try:
        yield
    finally:
        for n in created:
            sys.modules.pop(n, None)


class _Record:
    def __init__(self, meta: dict):
        self.meta = meta

    def __reduce__(self):
        return (_never_called, (self.meta,))


def _easy(d):
    out = _EasyDict()
    for k, v in d.items():
        out[k] = _easy(v) if isinstance(v, dict) else v
    return out


def persistent_record(module: torch.nn.Module, module_src: str, init_kwargs: dict | None = None,
                      class_name: str | None = None) -> _Record:
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(module._parameters),
        "_buffers": collections.OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": collections.OrderedDict(),
        "_forward_hooks": collections.OrderedDict(),
        "_modules": collections.OrderedDict(
            (n, persistent_record(c, module_src)) for n, c in module._modules.items()),
        "_init_args": (),
        "_init_kwargs": _easy(init_kwargs or {}),
        # Plain attributes as the official objects carry them (numpy scalars/arrays, lists).
        "example_size": np.int64(36),
        "example_rates": np.array([16.0, 32.0]),
        "example_padding": [1, 2, 1, 2],
    }
    name = class_name or OFFICIAL_CLASS_NAMES.get(type(module).__name__, type(module).__name__)
    return _Record(dict(type="class", version=6, module_src=module_src, class_name=name, state=state))


def write_official_snapshot(G=None, D=None, G_ema=None, marker: str = "/nonexistent", training_set_kwargs=None,
                            g_kwargs_override: dict | None = None, protocol: int = 4) -> bytes:
    """Bytes of a snapshot dict(G, D, G_ema, augment_pipe=None, training_set_kwargs) in the official layout."""
    module_src = f"import pathlib\npathlib.Path({marker!r}).touch()\n"
    with fake_official_modules():
        snap = {}
        for name, m in (("G", G), ("D", D), ("G_ema", G_ema)):
            if m is None:
                continue
            kwargs = official_init_kwargs(m.cfg)
            if name != "D" and g_kwargs_override:
                kwargs.update(g_kwargs_override)
            snap[name] = persistent_record(m, module_src, kwargs, "Discriminator" if name == "D" else "Generator")
        snap["augment_pipe"] = None
        snap["training_set_kwargs"] = _easy(training_set_kwargs or {})
        return pickle.dumps(snap, protocol=protocol)
