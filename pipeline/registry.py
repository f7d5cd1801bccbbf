"""List, show and promote registered generators; fetch a network from any source.

    python -m pipeline.registry list
    python -m pipeline.registry show stylegan3-emoji-t            # all versions, aliases, metrics
    python -m pipeline.registry show stylegan3-emoji-t@champion           # also models:/NAME@ALIAS, models:/NAME/3
    python -m pipeline.registry show outputs/runs/demo-emoji-faces16-t/checkpoint_0000006.000kimg   # any network source
    python -m pipeline.registry promote stylegan3-emoji-t 3 --alias champion

A network source (`fetch_network`, the one resolver used by generate, metrics, `train --resume` and
`registry show`) is any of:
`models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/NAME/latest` (also `models:/NAME@latest`), a checkpoint
directory (local or s3://) holding network.safetensors, a network file (.safetensors, local or s3://), or an
official NVIDIA network pickle (.pkl; imported without running its code).
"""

from __future__ import annotations

import argparse
import sys

from pipeline import storage
from pipeline.mlflow_store import missing_store, read_client
from pipeline.model_sources import SourceError, fetch_network, registered_name


def cmd_list(args) -> int:
    client, uri = read_client()
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
    parsed = registered_name(args.name)
    if parsed is None:
        return show_network(args.name)
    name, alias, version = parsed
    client, uri = read_client()
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
        if (v.source or "").startswith("models:/m-"):  # MLflow 3: the LoggedModel this version registers
            print(f"    logged model: {v.source[len('models:/'):]}")
    return 0


def cmd_promote(args) -> int:
    client, uri = read_client()
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
