"""Offline checks of ray_cluster.yaml: Ray's own validator, botocore's EC2 model, and our rules.

Nothing here talks to AWS. `check_cluster_config(cfg)` is the one entry point; the tests feed it the
real file and mutated copies that must fail.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import botocore.session
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "ray_cluster.yaml"


class ClusterConfigError(ValueError):
    """A problem in a cluster launcher file; the message names the field path and the fix."""


def _run_instances_shape():
    """botocore's input shape of EC2 RunInstances: what `node_config` is passed to verbatim."""
    model = botocore.session.get_session().get_service_model("ec2")
    return model.operation_model("RunInstances").input_shape


def _check_against_shape(value, shape, path: str) -> None:
    """Raise ClusterConfigError unless `value` fits botocore `shape` (keys, nesting, scalar types, enums)."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            raise ClusterConfigError(f"{path}: expected a mapping of {shape.name} fields, got {value!r}")
        for key, sub in value.items():
            if key not in shape.members:
                raise ClusterConfigError(
                    f"{path}.{key}: not a field of EC2 {shape.name}; valid fields: "
                    f"{', '.join(sorted(shape.members))}"
                )
            _check_against_shape(sub, shape.members[key], f"{path}.{key}")
    elif kind == "list":
        if not isinstance(value, list):
            raise ClusterConfigError(f"{path}: expected a list, got {value!r}")
        for i, item in enumerate(value):
            _check_against_shape(item, shape.member, f"{path}[{i}]")
    elif kind == "map":
        if not isinstance(value, dict):
            raise ClusterConfigError(f"{path}: expected a mapping, got {value!r}")
        for key, item in value.items():
            _check_against_shape(item, shape.value, f"{path}.{key}")
    elif kind == "string":
        if not isinstance(value, str):
            raise ClusterConfigError(f"{path}: expected a string, got {type(value).__name__} {value!r}")
        if shape.enum and value not in shape.enum:
            raise ClusterConfigError(
                f"{path}: {value!r} is not one of EC2's values for {shape.name} "
                f"(e.g. {', '.join(shape.enum[:8])}, ...)"
            )
    elif kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ClusterConfigError(f"{path}: expected an integer, got {type(value).__name__} {value!r}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise ClusterConfigError(f"{path}: expected true/false, got {value!r}")
    elif kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ClusterConfigError(f"{path}: expected a number, got {value!r}")
    # blob / timestamp: not used in node configs; botocore validates them at call time.


def _ray_schema() -> dict:
    import ray.autoscaler

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        return json.load(f)


def check_cluster_config(cfg: dict) -> dict:
    """Validate a cluster launcher config offline; return Ray's prepared config.

    Runs Ray's `prepare_config` + `validate_config` (the jsonschema `ray up` applies), then what that
    misses: `node_config` against EC2 RunInstances, `provider` keys against the schema's list, each
    node type's min_workers <= max_workers, and this project's rules (a head that schedules no work,
    GPU types that scale from zero, every spot type with an on-demand twin, an instance profile
    instead of keys). Raises jsonschema.ValidationError, ValueError or ClusterConfigError.
    """
    try:
        prepared = prepare_config(copy.deepcopy(cfg))
    except (AssertionError, KeyError) as e:  # Ray asserts on some docker / node type mistakes
        raise ClusterConfigError(f"Ray's prepare_config rejected the file: {type(e).__name__}: {e}") from e
    validate_config(prepared)

    provider_keys = set(_ray_schema()["properties"]["provider"]["properties"])
    for key in cfg.get("provider", {}):
        if key not in provider_keys:
            raise ClusterConfigError(f"provider.{key}: unknown provider field; valid: {sorted(provider_keys)}")

    shape = _run_instances_shape()
    node_types = cfg["available_node_types"]
    for name, node_type in node_types.items():
        where = f"available_node_types.{name}"
        _check_against_shape(node_type["node_config"], shape, f"{where}.node_config")
        lo, hi = node_type.get("min_workers", 0), node_type.get("max_workers", cfg["max_workers"])
        if lo > hi:
            raise ClusterConfigError(f"{where}: min_workers {lo} is above max_workers {hi}; lower min_workers")
        if "IamInstanceProfile" not in node_type["node_config"]:
            raise ClusterConfigError(f"{where}.node_config: no IamInstanceProfile; nodes reach S3 through it")

    head = cfg["head_node_type"]
    if node_types[head]["resources"].get("CPU") != 0:
        raise ClusterConfigError(
            f"available_node_types.{head}.resources: the head must advertise CPU: 0 so no training work lands on it"
        )
    workers = {n: t for n, t in node_types.items() if n != head}
    if not any(t["resources"].get("GPU", 0) > 0 for t in workers.values()):
        raise ClusterConfigError("available_node_types: no worker type offers a GPU")
    for name, node_type in workers.items():
        if node_type.get("min_workers", 0) != 0:
            raise ClusterConfigError(f"available_node_types.{name}.min_workers: must be 0 (scale from zero)")
        market = node_type["node_config"].get("InstanceMarketOptions", {}).get("MarketType")
        if market == "spot":
            twins = [
                other
                for other, t in workers.items()
                if t["node_config"].get("InstanceMarketOptions") is None
                and t["node_config"]["InstanceType"] == node_type["node_config"]["InstanceType"]
                and t["resources"] == node_type["resources"]
                and t.get("priority", 0) < node_type.get("priority", 0)
            ]
            if not twins:
                raise ClusterConfigError(
                    f"available_node_types.{name}: spot type without an on-demand twin "
                    "(same InstanceType and resources, lower priority) to fall back to"
                )
    return prepared


@pytest.fixture(scope="module")
def cluster_cfg() -> dict:
    with open(CLUSTER_YAML) as f:
        return yaml.safe_load(f)


def test_cluster_yaml_passes_ray_validator_and_ec2_model(cluster_cfg):
    prepared = check_cluster_config(cluster_cfg)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["available_node_types"][prepared["head_node_type"]]["resources"]["CPU"] == 0
    gpu_counts = {t["resources"].get("GPU", 0) for t in prepared["available_node_types"].values()}
    assert {1, 8} <= gpu_counts, "a 1-GPU and an 8-GPU worker type"
    assert prepared["idle_timeout_minutes"] > 0
    assert prepared["docker"]["image"]


def test_cluster_yaml_image_and_commands(cluster_cfg):
    import re

    import ray

    dockerfile = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    version = re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile, re.M).group(1)
    assert version == ray.__version__, "the image's Ray must equal the launcher's Ray"
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-py311-gpu$", dockerfile, re.M)
    assert "pip install --no-cache-dir ." in dockerfile
    text = CLUSTER_YAML.read_text()
    for secret in ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key", "AWS_ACCESS_KEY_ID"):
        assert secret not in text and secret not in dockerfile
    head_start = " ".join(cluster_cfg["head_start_ray_commands"])
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert "--force" not in head_start + " ".join(cluster_cfg["worker_start_ray_commands"])
    assert "python -m pipeline.train" in text  # the submit recipe in the header


def _mutate(cfg: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(cfg)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _rename(cfg: dict, path: tuple, new_key: str) -> dict:
    out = copy.deepcopy(cfg)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[new_key] = node.pop(path[-1])
    return out


NT = "available_node_types"
BAD_CONFIGS = {
    "top-level typo": lambda c: _rename(c, ("idle_timeout_minutes",), "idle_timeout_minute"),
    "max_workers as text": lambda c: _mutate(c, ("max_workers",), "eight"),
    "negative max_workers": lambda c: _mutate(c, ("max_workers",), -1),
    "node type field typo": lambda c: _rename(c, (NT, "gpu1-spot", "min_workers"), "min_worker"),
    "fractional GPU resource": lambda c: _mutate(c, (NT, "gpu1-spot", "resources", "GPU"), 0.5),
    "docker field typo": lambda c: _rename(c, ("docker", "image"), "imag"),
    "provider field typo": lambda c: _rename(c, ("provider", "availability_zone"), "availabilty_zone"),
    "node_config typo": lambda c: _rename(c, (NT, "gpu1-spot", "node_config", "InstanceType"), "InstanceTyp"),
    "nested node_config typo": lambda c: _rename(
        c, (NT, "gpu1-spot", "node_config", "InstanceMarketOptions", "MarketType"), "Market"
    ),
    "unknown instance type": lambda c: _mutate(c, (NT, "gpu1-spot", "node_config", "InstanceType"), "g6e.xlrage"),
    "volume size as text": lambda c: _mutate(
        c, (NT, "gpu8-spot", "node_config", "BlockDeviceMappings"),
        [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": "300"}}],
    ),
    "list where a structure belongs": lambda c: _mutate(c, (NT, "head", "node_config", "IamInstanceProfile"), ["arn"]),
    "min above max": lambda c: _mutate(c, (NT, "gpu8-spot", "min_workers"), 3),
    "head schedules work": lambda c: _mutate(c, (NT, "head", "resources", "CPU"), 4),
    "spot without on-demand twin": lambda c: _mutate(
        c, (NT, "gpu8-ondemand", "node_config", "InstanceType"), "p4de.24xlarge"
    ),
    "keys instead of instance profile": lambda c: _mutate(
        c, (NT, "gpu1-ondemand", "node_config"), {"InstanceType": "g6e.xlarge"}
    ),
    "head type missing": lambda c: _mutate(c, ("head_node_type",), "no-such-type"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_mutated_cluster_yaml_fails(cluster_cfg, name):
    import jsonschema

    bad = BAD_CONFIGS[name](cluster_cfg)
    with pytest.raises((jsonschema.ValidationError, ValueError, ClusterConfigError)):
        check_cluster_config(bad)


def test_min_above_max_is_missed_by_ray_and_caught_by_us(cluster_cfg):
    bad = _mutate(cluster_cfg, (NT, "gpu8-spot", "min_workers"), 3)
    validate_config(prepare_config(copy.deepcopy(bad)))  # Ray alone accepts it
    with pytest.raises(ClusterConfigError, match=r"gpu8-spot: min_workers 3 is above max_workers 2"):
        check_cluster_config(bad)


def test_node_config_typo_is_missed_by_ray_and_named_by_us(cluster_cfg):
    bad = _rename(cluster_cfg, (NT, "gpu1-spot", "node_config", "InstanceType"), "InstanceTyp")
    validate_config(prepare_config(copy.deepcopy(bad)))
    with pytest.raises(ClusterConfigError, match=r"gpu1-spot\.node_config\.InstanceTyp: not a field"):
        check_cluster_config(bad)
