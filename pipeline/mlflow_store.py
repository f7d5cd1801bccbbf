"""Where MLflow keeps runs and registered models: the tracking URI every part of the pipeline uses.

A module of its own (MLflow is imported only inside read_client) so that model-source resolution, tracking and the commands share it
without importing each other."""

from __future__ import annotations

import os
from pathlib import Path


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, else the embedded default `sqlite:///<cwd>/mlflow.db` (absolute, so Ray
    workers with another working directory use the same file)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def missing_store(uri: str) -> str | None:
    """For a sqlite tracking URI whose database file does not exist: a sentence saying so (MLflow would create an
    empty database there as a side effect of a read); else None."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return (f"no MLflow database at {uri[len('sqlite:///'):]} (MLFLOW_TRACKING_URI is "
                f"{'set to it' if os.environ.get('MLFLOW_TRACKING_URI') else 'unset, so ./mlflow.db is used'}): "
                "run this where you trained, or set MLFLOW_TRACKING_URI to the store that holds the model")
    return None


def read_client():
    """(MlflowClient, tracking URI), or (None, URI) when the URI names a sqlite file that does not exist: a
    read-only command must not create one."""
    uri = tracking_uri()
    if missing_store(uri):
        return None, uri
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri), uri
