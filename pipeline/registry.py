"""List, show and promote registered generators; fetch a network from any source.

    python -m pipeline.registry list
    python -m pipeline.registry show stylegan3-emoji-t            # all versions, aliases, metrics
    python -m pipeline.registry show stylegan3-emoji-t@champion           # also models:/NAME@ALIAS, models:/NAME/3
    python -m pipeline.registry show outputs/runs/demo-emoji32-t/checkpoint_000004   # any network source
    python -m pipeline.registry promote stylegan3-emoji-t 3 --alias champion

A network source (`fetch_network`, the one resolver used by generate, metrics, `train --resume` and
`registry show`) is any of:
`models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/NAME/latest` (also `models:/NAME@latest`), a checkpoint
directory (local or s3://) holding network.safetensors, a network file (.safetensors, local or s3://), or an
official NVIDIA network pickle (.pkl; imported without running its code).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from pipeline import storage

NETWORK_FILE = "network.safetensors"


class SourceError(ValueError):
    """A network source that cannot be found or read; the message says which and what to do."""


def normalise_model_uri(uri: str) -> str:
    """`models:/NAME@latest` -> `models:/NAME/latest` (MLflow reserves `latest` as an alias name)."""
    if uri.startswith("models:/") and uri.lower().endswith("@latest"):
        return uri[: -len("@latest")] + "/latest"
    return uri


def missing_store(uri: str) -> str | None:
    """For a sqlite tracking URI whose database file does not exist: a sentence saying so (MLflow would create an
    empty database there as a side effect of a read); else None."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return (f"no MLflow database at {uri[len('sqlite:///'):]} (MLFLOW_TRACKING_URI is "
                f"{'set to it' if os.environ.get('MLFLOW_TRACKING_URI') else 'unset, so ./mlflow.db is used'}): "
                "run this where you trained, or set MLFLOW_TRACKING_URI to the store that holds the model")
    return None


def fetch_network(src: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local path of the network file named by `src` (downloaded into `cache_dir` when remote)."""
    if src.startswith("models:/"):
        import mlflow
        from mlflow.exceptions import MlflowException

        from pipeline.tracking import tracking_uri

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
    import models

    net = models.load_network(str(fetch_network(src)))
    G = net.G_ema if net.G_ema is not None else net.G
    if G is None:
        raise SourceError(f"{src} holds no generator")
    return G.eval().requires_grad_(False).to(device)


# ---------------------------------------------------------------------------------------------------


def _client():
    """(MlflowClient, tracking URI), or (None, URI) when the URI names a sqlite file that does not exist: a
    read-only command must not create one."""
    from pipeline.tracking import tracking_uri

    uri = tracking_uri()
    if missing_store(uri):
        return None, uri
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def cmd_list(args) -> int:
    client, uri = _client()
    if client is None:
        print(f"no registered models: {missing_store(uri)}")
        return 0
    models = client.search_registered_models()
    if not models:
        print(f"no registered models at {uri}")
        return 0
    print(f"{'name':40s} {'versions':>8s}  aliases")
    for m in models:
        versions = client.search_model_versions(f"name='{m.name}'")
        aliases = ", ".join(f"{a}→v{v}" for a, v in sorted((m.aliases or {}).items()))
        print(f"{m.name:40s} {len(versions):8d}  {aliases or '-'}")
    return 0


def _registered_name(source: str) -> tuple[str, str, str] | None:
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


def show_network(src: str) -> int:
    """`show` for a source that is not a registered model: what the network file holds."""
    import models
    from models.network_io import NetworkFileError

    try:
        path = fetch_network(src)
        net = models.load_network(str(path))
    except (SourceError, NetworkFileError, storage.StorageError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    G = net.G_ema if net.G_ema is not None else net.G
    parts = [("G_ema", net.G_ema), ("G", net.G), ("D", net.D)]
    held = ", ".join(f"{n} ({sum(p.numel() for p in m.parameters()):,} parameters)" for n, m in parts if m is not None)
    print(f"{src}  (network file {path})")
    if G is not None:
        print(f"    generator: {G.img_resolution}x{G.img_resolution}, {G.img_channels} channels, "
              f"{G.c_dim} classes, z {G.z_dim}, w {G.w_dim}")
    print(f"    holds: {held or 'no networks'}")
    return 0


def cmd_show(args) -> int:
    parsed = _registered_name(args.name)
    if parsed is None:
        return show_network(args.name)
    name, alias, version = parsed
    client, uri = _client()
    if client is None:
        print(f"error: {args.name}: {missing_store(uri)}", file=sys.stderr)
        return 2
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    if not versions:
        print(f"no registered model named {name!r} at {uri} (see `python -m pipeline.registry list`)",
              file=sys.stderr)
        return 2
    if version:
        versions = [v for v in versions if str(v.version) == version]
        if not versions:
            print(f"error: {name} has no version {version} (see `python -m pipeline.registry show {name}`)",
                  file=sys.stderr)
            return 2
    elif alias:
        if alias.lower() == "latest":
            versions = versions[-1:]
        else:
            versions = [client.get_model_version_by_alias(name, alias)]
    aliases = client.get_registered_model(name).aliases or {}
    by_version: dict[str, list[str]] = {}
    for a, v in aliases.items():
        by_version.setdefault(str(v), []).append(a)
    newest = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    for v in versions:
        tags = dict(v.tags or {})
        labels = by_version.get(str(v.version), []) + (["latest"] if int(v.version) == newest else [])
        metrics = ", ".join(f"{k[7:]}={val}" for k, val in sorted(tags.items()) if k.startswith("metric."))
        print(f"{name} v{v.version}  [{', '.join(labels) or '-'}]  kimg={tags.get('kimg', '?')}  run={v.run_id}")
        if metrics:
            print(f"    metrics: {metrics}")
        print(f"    uri: models:/{name}/{v.version}")
    return 0


def cmd_promote(args) -> int:
    client, uri = _client()
    if client is None:
        print(f"error: {missing_store(uri)}", file=sys.stderr)
        return 2
    if args.alias.lower() == "latest":
        print("'latest' always follows the newest version by itself; choose another alias", file=sys.stderr)
        return 2
    client.get_model_version(args.name, str(args.version))  # raises a clear MLflow error if missing
    client.set_registered_model_alias(args.name, args.alias, str(args.version))
    print(f"models:/{args.name}@{args.alias} -> version {args.version}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.registry", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered generators with their version counts and aliases")
    s = sub.add_parser("show", help="versions of one model (NAME or NAME@ALIAS) with kimg, metrics and aliases, "
                                    "or what any other network source holds")
    s.add_argument("name", metavar="SOURCE",
                   help="registered model: NAME, NAME@ALIAS, models:/NAME@ALIAS or models:/NAME/VERSION; or any "
                        "other network source (checkpoint directory, .safetensors file, official .pkl)")
    pr = sub.add_parser("promote", help="point an alias (default: champion) at a version")
    pr.add_argument("name", help="registered model name")
    pr.add_argument("version", type=int, help="version number to promote")
    pr.add_argument("--alias", default="champion", help="alias to set (default: champion)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from mlflow.exceptions import MlflowException

    try:
        return {"list": cmd_list, "show": cmd_show, "promote": cmd_promote}[args.command](args)
    except MlflowException as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
