"""Network sources: find the network file a user names, wherever it lives.

A network source (the one resolver used by generate, metrics, `train --resume`, tune and `registry show`) is any
of: `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/NAME/latest` (also `models:/NAME@latest`), a
checkpoint directory (local or s3://) holding network.safetensors, a network file (.safetensors, local or s3://),
or an official NVIDIA network pickle (.pkl; imported without running its code).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pipeline import storage
from pipeline.mlflow_store import missing_store, tracking_uri

# The network file of a checkpoint directory and of a registered model (models.save_network's format).
NETWORK_FILE = "network.safetensors"


class SourceError(ValueError):
    """A network source that cannot be found or read; the message says which and what to do."""


def normalise_model_uri(uri: str) -> str:
    """`models:/NAME@latest` -> `models:/NAME/latest` (MLflow reserves `latest` as an alias name)."""
    if uri.startswith("models:/") and uri.lower().endswith("@latest"):
        return uri[: -len("@latest")] + "/latest"
    return uri


def fetch_network(src: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local path of the network file named by `src` (downloaded into `cache_dir` when remote)."""
    if src.startswith("models:/"):
        import mlflow  # here, not at the top: `import mlflow` takes seconds and most sources do not need it
        from mlflow.exceptions import MlflowException

        missing = missing_store(tracking_uri())
        if missing:
            raise SourceError(f"{src}: {missing}")
        cache = Path(cache_dir or tempfile.mkdtemp(prefix="sg3-net-"))
        # A network is a few files fetched in a second: MLflow's per-file progress bars would only clutter.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow.set_tracking_uri(tracking_uri())
        mlflow.set_registry_uri(tracking_uri())
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=normalise_model_uri(src),
                                                             dst_path=str(cache)))
        except MlflowException as exc:
            raise SourceError(f"{src}: {str(exc).splitlines()[0]} (tracking URI {tracking_uri()}; list the "
                              "registered models with `python -m pipeline.registry list`)") from None
        found = sorted(local.rglob("*.safetensors"))
        if not found:
            raise SourceError(f"{src} holds no network file (.safetensors): was it registered by stylegan3-ray?")
        return found[0]
    cache = Path(cache_dir or tempfile.mkdtemp(prefix="sg3-net-"))
    if src.endswith((".safetensors", ".pkl")):
        if storage.is_s3(src):
            dest = cache / src.rsplit("/", 1)[-1]
            storage.download_file(src, dest)
            return dest
        if not Path(src).is_file():
            raise SourceError(f"network file {src} does not exist")
        return Path(src)
    # A checkpoint directory.
    candidate = storage.join(src, NETWORK_FILE)
    if not storage.exists(candidate):
        raise SourceError(f"{src}: not a models:/ URI, a .safetensors/.pkl file, or a checkpoint directory "
                          f"holding {NETWORK_FILE}")
    if storage.is_s3(candidate):
        dest = cache / NETWORK_FILE
        storage.download_file(candidate, dest)
        return dest
    return Path(storage.parse(candidate).path)


def load_generator(src: str, device: str = "cpu"):
    """The EMA generator (else G) of any network source, in eval mode without gradients.
    Raises SourceError (or models.NetworkFileError for a damaged file) with a message naming `src`."""
    import models  # here: torch and the ops take seconds to import, and `registry list` needs neither

    net = models.load_network(str(fetch_network(src)))
    G = net.G_ema if net.G_ema is not None else net.G
    if G is None:
        raise SourceError(f"{src} holds no generator")
    return G.eval().requires_grad_(False).to(device)


def registered_name(source: str) -> tuple[str, str, str] | None:
    """(name, alias, version) of NAME, NAME@ALIAS, models:/NAME@ALIAS or models:/NAME/VERSION; None for a
    source that is not a registered model (a checkpoint directory, a network file, an official .pkl)."""
    if source.startswith("models:/"):
        rest = normalise_model_uri(source)[len("models:/"):]
        name, _, version = rest.partition("/")
        name, _, alias = name.partition("@")
        if version.lower() == "latest":
            return name, "latest", ""
        return name, alias, version
    looks_like_path = "/" in source or source.endswith((".safetensors", ".pkl")) or Path(source).exists()
    if looks_like_path:
        return None
    name, _, alias = source.partition("@")
    return name, alias, ""
