"""Network files: our safetensors format, and a safe importer for official StyleGAN3 pickles.

Our format (one file, conventionally `*.safetensors`):
    tensors   "G.<state_dict key>", "D.<key>", "G_ema.<key>" (whichever modules were saved), bit-exact;
    metadata  "format" = "stylegan3-ray/network", "format_version" = "1",
              "config" = NetworkConfig.to_dict() as JSON, "modules" = JSON list of saved module names,
              "extra" = JSON of the caller's `extra` dict (e.g. kimg, training options).

Official pickles (`network-snapshot-*.pkl`, NVIDIA's released `stylegan3-*.pkl`, docs/algorithm.md "Network pickles") are read
without running any code from them: a restricted unpickler allows only the globals a snapshot
needs, turns each persistent-object record into an inert stub (the embedded source text is never
executed), parses each tensor storage blob itself instead of calling torch.load, and we rebuild
our own G / D / G_ema from the recorded constructor arguments (`_init_kwargs`) and tensors.
Anything else is refused with an error that names what was found.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import DiscriminatorConfig, GeneratorConfig, NetworkConfig

FORMAT_NAME = "stylegan3-ray/network"
FORMAT_VERSION = "1"
MODULE_NAMES = ("G", "D", "G_ema")


class NetworkFileError(ValueError):
    """A network file is malformed, unsupported or refused for safety; the message says why."""


@dataclass
class Network:
    """What load_network returns. Any of G, D, G_ema may be None. Modules are on the CPU, in eval mode."""

    G: Optional[torch.nn.Module] = None
    D: Optional[torch.nn.Module] = None
    G_ema: Optional[torch.nn.Module] = None
    config: Optional[NetworkConfig] = None
    extra: dict = field(default_factory=dict)
    source: str = FORMAT_NAME       # FORMAT_NAME or "official-pickle"


# --------------------------------------------------------------------------------------------------
# Our format

def _module_config(module: torch.nn.Module, name: str):
    cfg = getattr(module, "cfg", None)
    if cfg is None:
        raise TypeError(f"save_network: {name} has no .cfg; pass networks built by models.build()")
    return cfg


def network_to_bytes(G: Optional[torch.nn.Module] = None, D: Optional[torch.nn.Module] = None,
                     G_ema: Optional[torch.nn.Module] = None, config: Optional[NetworkConfig] = None,
                     extra: Optional[dict] = None) -> bytes:
    """Serialise networks to our safetensors format (see module docstring); returns the file bytes."""
    modules = {"G": G, "D": D, "G_ema": G_ema}
    present = {k: m for k, m in modules.items() if m is not None}
    if not present:
        raise ValueError("save_network: nothing to save (G, D and G_ema are all None)")
    if config is None:
        attached = {getattr(m, "network_config", None) for m in present.values()}
        if len(attached) == 1 and None not in attached:
            config = attached.pop()
    if config is None:
        g_cfg = next((_module_config(m, k) for k, m in present.items() if k != "D"), GeneratorConfig())
        d_cfg = _module_config(D, "D") if D is not None else DiscriminatorConfig()
        config = NetworkConfig(preset="custom", G=g_cfg, D=d_cfg)
    for k, m in present.items():
        want = config.D if k == "D" else config.G
        if _module_config(m, k) != want:
            raise ValueError(f"save_network: {k}.cfg differs from config.{'D' if k == 'D' else 'G'}; "
                             f"{k}.cfg={_module_config(m, k)} config={want}")
    tensors = {}
    for k, m in present.items():
        for key, t in m.state_dict().items():
            tensors[f"{k}.{key}"] = t.detach().to("cpu").contiguous().clone()
    try:
        extra_json = json.dumps(extra or {})
    except TypeError as e:
        raise TypeError(f"save_network: `extra` must be JSON-serialisable: {e}") from e
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "config": json.dumps(config.to_dict()), "modules": json.dumps(list(present)), "extra": extra_json}
    return st_save(tensors, metadata=metadata)


def save_network(path: Union[str, os.PathLike], G: Optional[torch.nn.Module] = None,
                 D: Optional[torch.nn.Module] = None, G_ema: Optional[torch.nn.Module] = None,
                 config: Optional[NetworkConfig] = None, extra: Optional[dict] = None) -> Path:
    """Write networks to a local file in our format, atomically (temp file + rename). Returns the path.

    config: the NetworkConfig the modules were built from (default: taken from the modules' .cfg).
    extra: JSON-serialisable dict stored alongside (e.g. {"kimg": 200}).
    """
    data = network_to_bytes(G=G, D=D, G_ema=G_ema, config=config, extra=extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _read_safetensors_metadata(data: bytes) -> dict:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    return header.get("__metadata__", {}) or {}


def _load_ours(data: bytes, where: str) -> Network:
    from .discriminator import Discriminator
    from .generator import Generator

    meta = _read_safetensors_metadata(data)
    if meta.get("format") != FORMAT_NAME:
        raise NetworkFileError(f"{where}: a safetensors file but not a stylegan3-ray network "
                               f"(metadata format={meta.get('format')!r}, expected {FORMAT_NAME!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise NetworkFileError(f"{where}: network format version {meta.get('format_version')!r} is not supported "
                               f"(this code reads version {FORMAT_VERSION})")
    config = NetworkConfig.from_dict(json.loads(meta["config"]))
    modules = json.loads(meta["modules"])
    tensors = st_load(data)
    net = Network(config=config, extra=json.loads(meta.get("extra", "{}")), source=FORMAT_NAME)
    for name in modules:
        if name not in MODULE_NAMES:
            raise NetworkFileError(f"{where}: unknown module {name!r} in metadata; expected one of {MODULE_NAMES}")
        module = Discriminator(config.D) if name == "D" else Generator(config.G)
        prefix = name + "."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        _load_state_dict_checked(module, sd, f"{where} [{name}]")
        setattr(net, name, module.eval().requires_grad_(False))
        module.network_config = config
    return net


def _load_state_dict_checked(module: torch.nn.Module, sd: dict, where: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise NetworkFileError(f"{where}: state_dict does not match the architecture; missing {missing[:8]}"
                               f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                               f"{'...' if len(unexpected) > 8 else ''}")
    bad = [f"{k}: file {list(sd[k].shape)} vs model {list(v.shape)}" for k, v in own.items()
           if tuple(sd[k].shape) != tuple(v.shape)]
    if bad:
        raise NetworkFileError(f"{where}: tensor shapes do not match the architecture: {bad[:8]}")
    module.load_state_dict({k: sd[k].to(own[k].dtype) for k in own}, strict=True)


# --------------------------------------------------------------------------------------------------
# Official pickles (docs/algorithm.md "Network pickles")

_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (a dict with attribute access) inside `_init_kwargs`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


class PersistentStub:
    """Inert record of an official persistent object: class name, constructor kwargs and state.

    The embedded source text is only hashed (to identify the code version), never executed.
    """

    def __init__(self, class_name: str, state: dict, version: Any, module_src_sha256: str):
        self.class_name = class_name
        self.state = state
        self.version = version
        self.module_src_sha256 = module_src_sha256

    def __setstate__(self, state):  # BUILD opcodes must not be able to alter a stub
        raise pickle.UnpicklingError("refusing to set state on a persistent-object stub")

    def __repr__(self) -> str:
        return f"PersistentStub({self.class_name!r})"


def _reconstruct_persistent_stub(meta: Any) -> PersistentStub:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        kind = meta.get("type") if isinstance(meta, dict) else type(meta).__name__
        raise pickle.UnpicklingError(f"persistent record of type {kind!r}; only 'class' records are supported")
    class_name, state, src = meta.get("class_name"), meta.get("state"), meta.get("module_src", "")
    if not isinstance(class_name, str) or not isinstance(state, dict) or not isinstance(src, str):
        raise pickle.UnpicklingError("malformed persistent record (class_name/state/module_src)")
    return PersistentStub(class_name, state, meta.get("version"), hashlib.sha256(src.encode()).hexdigest())


class _StorageMarker:
    def __init__(self, name: str):
        self.dtype = _STORAGE_DTYPES[name]


class _StorageRef:
    def __init__(self, key: str, dtype: torch.dtype):
        self.key = key
        self.dtype = dtype


class _StorageBlobUnpickler(pickle.Unpickler):
    """Reads the pickled parts of a legacy `torch.save(storage)` blob; allows only storage types."""

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageMarker(name)  # the GLOBAL only tags the storage record with its dtype
        raise pickle.UnpicklingError(f"tensor storage blob refers to {module}.{name}, which is not a storage type")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id in storage blob: {pid!r:.80}")
        marker, key = pid[1], pid[2]
        if not isinstance(marker, _StorageMarker) or not isinstance(key, str):
            raise pickle.UnpicklingError("malformed storage record in storage blob")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported in storage blobs")
        return _StorageRef(key, marker.dtype)


def _load_storage_blob(blob: bytes) -> torch.Tensor:
    """Parse a legacy-format `torch.save(storage)` blob (what `torch.storage._load_from_bytes`
    receives) without torch.load: header pickles, one storage record, key list, then per storage an
    int64 element count and the raw little-endian data. Returns a 1-D tensor of the storage dtype."""
    if not isinstance(blob, (bytes, bytearray)):
        raise pickle.UnpicklingError("tensor storage payload is not bytes")
    f = io.BytesIO(blob)
    magic = _StorageBlobUnpickler(f).load()
    proto = _StorageBlobUnpickler(f).load()
    sys_info = _StorageBlobUnpickler(f).load()
    if magic != _TORCH_LEGACY_MAGIC or proto != _TORCH_LEGACY_PROTOCOL:
        raise pickle.UnpicklingError("tensor storage blob is not in torch's legacy serialisation format")
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise pickle.UnpicklingError("tensor storage blob is not little-endian")
    ref = _StorageBlobUnpickler(f).load()
    keys = _StorageBlobUnpickler(f).load()
    if not isinstance(ref, _StorageRef) or keys != [ref.key]:
        raise pickle.UnpicklingError("tensor storage blob must hold exactly one storage")
    (count,) = struct.unpack("<q", f.read(8))
    itemsize = torch.empty([], dtype=ref.dtype).element_size()
    raw = f.read(count * itemsize)
    if count < 0 or len(raw) != count * itemsize:
        raise pickle.UnpicklingError("tensor storage blob is truncated")
    if count == 0:
        return torch.empty([0], dtype=ref.dtype)
    return torch.frombuffer(bytearray(raw), dtype=ref.dtype)


def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor) or storage.ndim != 1:
        raise pickle.UnpicklingError("tensor record without a parsed storage")
    if backward_hooks:
        raise pickle.UnpicklingError("tensors with backward hooks are not supported")
    try:
        return torch.as_strided(storage, tuple(size), tuple(stride), int(storage_offset)).clone()
    except RuntimeError as e:
        raise pickle.UnpicklingError(f"tensor record out of bounds of its storage: {e}") from e


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       *state: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter record without tensor data")
    if backward_hooks:
        raise pickle.UnpicklingError("parameters with backward hooks are not supported")
    return torch.nn.Parameter(data, requires_grad=False)


def _numpy_multiarray():
    try:
        import numpy._core.multiarray as ma  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        import numpy.core.multiarray as ma
    return ma


_ALLOWED_GLOBALS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_stub,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_blob,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_multiarray()._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_multiarray()._reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_multiarray().scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_multiarray().scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        fn = _ALLOWED_GLOBALS.get((module, name))
        if fn is not None:
            return fn
        if module.startswith("dnnlib.tflib"):
            raise pickle.UnpicklingError(
                f"found {module}.{name}: this is a TensorFlow-era StyleGAN pickle, which is not supported")
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: not in the allow-list of "
                                     f"an official StyleGAN3 network pickle (docs/algorithm.md 'Reading official pickles safely')")

    def persistent_load(self, pid: Any):
        raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80} in a network pickle")


def _flatten_stub(stub: PersistentStub, prefix: str, out: dict, where: str) -> None:
    st = stub.state
    params = st.get("_parameters") or {}
    buffers = st.get("_buffers") or {}
    modules = st.get("_modules") or {}
    non_persistent = st.get("_non_persistent_buffers_set") or set()
    for name, t in list(params.items()) + [(n, b) for n, b in buffers.items() if n not in non_persistent]:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise NetworkFileError(f"{where}: {prefix}{name} is a {type(t).__name__}, expected a tensor")
        out[prefix + name] = t.detach()
    for name, child in modules.items():
        if child is None:
            continue
        if not isinstance(child, PersistentStub):
            raise NetworkFileError(f"{where}: submodule {prefix}{name} is a {type(child).__name__}, "
                                   f"expected a persistent network object")
        _flatten_stub(child, f"{prefix}{name}.", out, where)


def _take(d: dict, key: str, default: Any) -> Any:
    return d.pop(key) if key in d else default


def _generator_config_from_official(kw: dict, where: str) -> GeneratorConfig:
    kw = dict(kw)
    mapping = dict(_take(kw, "mapping_kwargs", {}) or {})
    g = dict(z_dim=_take(kw, "z_dim", 512), c_dim=_take(kw, "c_dim", 0), w_dim=_take(kw, "w_dim", 512),
             img_resolution=_take(kw, "img_resolution", None), img_channels=_take(kw, "img_channels", 3),
             map_depth=_take(mapping, "num_layers", 2),
             mapping_lr_multiplier=_take(mapping, "lr_multiplier", 0.01),
             w_avg_beta=_take(mapping, "w_avg_beta", 0.998))
    # Official synthesis defaults (docs/algorithm.md "Synthesis schedule", "Official training options") where the pickle does not record a value.
    official_defaults = dict(channel_base=32768, channel_max=512, num_layers=14, num_critical=2, first_cutoff=2,
                             first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3, margin_size=10,
                             output_scale=0.25, num_fp16_res=4, conv_clamp=256, filter_size=6,
                             lrelu_upsampling=2, use_radial_filters=False, conv_kernel=3,
                             magnitude_ema_beta=0.999)
    for key, default in official_defaults.items():
        g[key] = _take(kw, key, default)
    leftovers = {f"mapping_kwargs.{k}": v for k, v in mapping.items()}
    leftovers.update(kw)
    if leftovers:
        raise NetworkFileError(f"{where}: unsupported generator constructor argument(s) {sorted(leftovers)}")
    if g["img_resolution"] is None:
        raise NetworkFileError(f"{where}: generator _init_kwargs lack img_resolution")
    g = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in g.items()}
    g["conv_clamp"] = None if g["conv_clamp"] is None else float(g["conv_clamp"])
    return GeneratorConfig(**{k: (int(v) if isinstance(v, (np.integer,)) else v) for k, v in g.items()})


def _discriminator_config_from_official(kw: dict, where: str) -> tuple[DiscriminatorConfig, dict]:
    kw = dict(kw)
    extra = {}
    arch = _take(kw, "architecture", "resnet")
    if arch != "resnet":
        raise NetworkFileError(f"{where}: discriminator architecture {arch!r} is not supported (only 'resnet')")
    block = dict(_take(kw, "block_kwargs", {}) or {})
    mapping = dict(_take(kw, "mapping_kwargs", {}) or {})
    epilogue = dict(_take(kw, "epilogue_kwargs", {}) or {})
    freeze = _take(block, "freeze_layers", 0)
    if freeze:
        extra["D_freeze_layers"] = int(freeze)
    d = dict(img_resolution=_take(kw, "img_resolution", None), img_channels=_take(kw, "img_channels", 3),
             c_dim=_take(kw, "c_dim", 0), channel_base=_take(kw, "channel_base", 32768),
             channel_max=_take(kw, "channel_max", 512), num_fp16_res=_take(kw, "num_fp16_res", 4),
             conv_clamp=_take(kw, "conv_clamp", 256), cmap_dim=_take(kw, "cmap_dim", None),
             mbstd_group_size=_take(epilogue, "mbstd_group_size", 4),
             mbstd_num_channels=_take(epilogue, "mbstd_num_channels", 1),
             mapping_layers=_take(mapping, "num_layers", 8))
    leftovers = {f"block_kwargs.{k}": v for k, v in block.items()}
    leftovers.update({f"mapping_kwargs.{k}": v for k, v in mapping.items()})
    leftovers.update({f"epilogue_kwargs.{k}": v for k, v in epilogue.items()})
    leftovers.update(kw)
    if leftovers:
        raise NetworkFileError(f"{where}: unsupported discriminator constructor argument(s) {sorted(leftovers)}")
    if d["img_resolution"] is None:
        raise NetworkFileError(f"{where}: discriminator _init_kwargs lack img_resolution")
    d["conv_clamp"] = None if d["conv_clamp"] is None else float(d["conv_clamp"])
    d = {k: (int(v) if isinstance(v, np.integer) else v) for k, v in d.items()}
    return DiscriminatorConfig(**d), extra


def official_init_kwargs(cfg: Union[GeneratorConfig, DiscriminatorConfig]) -> dict:
    """Constructor arguments an official snapshot records for a network with this config (the inverse
    of the importer's mapping; used to write official-layout test files and for documentation)."""
    if isinstance(cfg, GeneratorConfig):
        return dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                    img_channels=cfg.img_channels,
                    mapping_kwargs=EasyDict(num_layers=cfg.map_depth), channel_base=cfg.channel_base,
                    channel_max=cfg.channel_max, magnitude_ema_beta=cfg.magnitude_ema_beta,
                    conv_kernel=cfg.conv_kernel, use_radial_filters=cfg.use_radial_filters,
                    num_fp16_res=cfg.num_fp16_res, conv_clamp=cfg.conv_clamp)
    return dict(c_dim=cfg.c_dim, img_resolution=cfg.img_resolution, img_channels=cfg.img_channels,
                channel_base=cfg.channel_base, channel_max=cfg.channel_max, num_fp16_res=cfg.num_fp16_res,
                conv_clamp=cfg.conv_clamp, block_kwargs=EasyDict(freeze_layers=0), mapping_kwargs=EasyDict(),
                epilogue_kwargs=EasyDict(mbstd_group_size=cfg.mbstd_group_size))


def _guess_preset(g: GeneratorConfig) -> str:
    if g.conv_kernel == 1 and g.use_radial_filters:
        return "stylegan3-r"
    if g.conv_kernel == 3 and not g.use_radial_filters:
        return "stylegan3-t"
    return "custom"


def _load_official(data: bytes, where: str) -> Network:
    from .discriminator import Discriminator
    from .generator import Generator

    try:
        obj = _RestrictedUnpickler(io.BytesIO(data)).load()
    except NetworkFileError:
        raise
    except Exception as e:  # UnpicklingError from the allow-list, or a corrupt stream
        raise NetworkFileError(f"{where}: refused or unreadable network pickle: {e}") from e
    if not isinstance(obj, dict):
        raise NetworkFileError(f"{where}: top-level object is a {type(obj).__name__}, expected a snapshot dict "
                               f"with keys G, D, G_ema")
    net = Network(source="official-pickle")
    g_cfg = d_cfg = None
    for name in MODULE_NAMES:
        stub = obj.get(name)
        if stub is None:
            continue
        want = "Discriminator" if name == "D" else "Generator"
        if not isinstance(stub, PersistentStub) or stub.class_name != want:
            found = stub.class_name if isinstance(stub, PersistentStub) else type(stub).__name__
            raise NetworkFileError(f"{where}: {name} is {found!r}, expected a persistent {want}")
        kwargs = stub.state.get("_init_kwargs")
        if not isinstance(kwargs, dict):
            raise NetworkFileError(f"{where}: {name} has no _init_kwargs record")
        sd: dict = {}
        _flatten_stub(stub, "", sd, f"{where} [{name}]")
        if name == "D":
            cfg, d_extra = _discriminator_config_from_official(kwargs, f"{where} [D]")
            net.extra.update(d_extra)
            module = Discriminator(cfg)
            d_cfg = cfg
        else:
            if "synthesis.input.freqs" not in sd:
                raise NetworkFileError(f"{where}: {name} is not a StyleGAN3 generator (no synthesis.input.freqs; "
                                       f"StyleGAN2 generators are not supported)")
            cfg = _generator_config_from_official(kwargs, f"{where} [{name}]")
            if g_cfg is not None and cfg != g_cfg:
                raise NetworkFileError(f"{where}: G and G_ema were built with different arguments")
            module = Generator(cfg)
            g_cfg = cfg
        _load_state_dict_checked(module, sd, f"{where} [{name}]")
        setattr(net, name, module.eval().requires_grad_(False))
        net.extra[f"{name}_code_sha256"] = stub.module_src_sha256
    if net.G is None and net.D is None and net.G_ema is None:
        raise NetworkFileError(f"{where}: snapshot holds none of G, D, G_ema (keys: {sorted(map(str, obj))[:10]})")
    pipe = obj.get("augment_pipe")
    if isinstance(pipe, PersistentStub):
        net.extra["augment_kwargs"] = dict(pipe.state.get("_init_kwargs") or {})
        p = (pipe.state.get("_buffers") or {}).get("p")
        if isinstance(p, torch.Tensor):
            net.extra["augment_p"] = float(p)
    tsk = obj.get("training_set_kwargs")
    if isinstance(tsk, dict):
        net.extra["training_set_kwargs"] = {k: v for k, v in tsk.items() if isinstance(v, (str, int, float, bool))
                                            or v is None}
    g_cfg = g_cfg or GeneratorConfig(img_resolution=d_cfg.img_resolution, img_channels=d_cfg.img_channels,
                                     c_dim=d_cfg.c_dim)
    d_cfg = d_cfg or DiscriminatorConfig(img_resolution=g_cfg.img_resolution, img_channels=g_cfg.img_channels,
                                         c_dim=g_cfg.c_dim)
    net.config = NetworkConfig(preset=_guess_preset(g_cfg), G=g_cfg, D=d_cfg)
    for module in (net.G, net.D, net.G_ema):
        if module is not None:
            module.network_config = net.config
    return net


# --------------------------------------------------------------------------------------------------

def load_network(src: Union[str, os.PathLike, bytes]) -> Network:
    """Load a network file: ours (safetensors + JSON config) or an official StyleGAN3 pickle.

    src: a local path or the file's bytes. Returns Network(G, D, G_ema, config, extra, source) with
    modules on the CPU, in eval mode, requires_grad off. Raises NetworkFileError naming the problem.
    """
    if isinstance(src, (bytes, bytearray)):
        data, where = bytes(src), "<bytes>"
    else:
        where = str(src)
        try:
            data = Path(src).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"network file not found: {where}") from None
    # Safetensors first: its u64 header length can start with byte 0x80 (a pickle's PROTO opcode), while
    # a pickle's 9th byte is inside its frame length (0 for any real file), never "{".
    if len(data) >= 9 and data[8:9] == b"{":  # safetensors: u64 header length + JSON header
        return _load_ours(data, where)
    if len(data) >= 2 and data[0] == 0x80:   # pickle PROTO opcode
        return _load_official(data, where)
    raise NetworkFileError(f"{where}: neither a stylegan3-ray network (safetensors) nor a network pickle")


__all__ = ["Network", "NetworkFileError", "save_network", "load_network", "network_to_bytes",
           "official_init_kwargs", "PersistentStub", "EasyDict", "FORMAT_NAME"]

