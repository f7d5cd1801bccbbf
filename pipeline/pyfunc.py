"""The MLflow pyfunc form of a generator: our network file (safetensors + JSON config) behind a small wrapper.

No pickled torch module and no `code_paths` (docs/platform.md "MLflow"): the model directory holds the network
file as an artifact, and loading needs only this package installed.

Input (a DataFrame, or JSON `{"dataframe_records": [...]}` when served):
    seed      long    latent seed (z = randn(z_dim) from torch.Generator().manual_seed(seed))
    psi       double  truncation ψ (optional, default 1)
    class_idx long    label for conditional models (optional, default 0; ignored when unconditional)
Output: one row per input row: seed, width, height, channels, png (base64-encoded PNG of the image).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

import models
from pipeline.pixels import png_bytes, to_uint8

NETWORK_ARTIFACT = "network"


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """Serves images of G_ema for (seed, psi, class_idx) rows."""

    # MLflow 3 checks `predict` for type hints when this class is defined (every import, e.g. in each
    # `generate`) and warns that it has none, under its own "once" filter, which no warnings filter of ours
    # overrides. The model is saved with an explicit signature (`signature()` below), so the hint-based
    # validation is not wanted: this class attribute is MLflow's own switch to skip that check.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        net = models.load_network(context.artifacts[NETWORK_ARTIFACT])
        self.G = (net.G_ema if net.G_ema is not None else net.G).eval().requires_grad_(False)

    def predict(self, context, model_input, params=None):
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "seed" not in df.columns:
            raise ValueError("input needs a 'seed' column (integer latent seed); optional: psi, class_idx")
        rows = []
        for rec in df.to_dict("records"):
            psi, cls = rec.get("psi"), rec.get("class_idx")
            img = generate_image(self.G, int(rec["seed"]), 1.0 if psi is None or pd.isna(psi) else float(psi),
                                 0 if cls is None or pd.isna(cls) else int(cls))
            hwc = to_uint8(img)[0].permute(1, 2, 0).numpy()
            rows.append({"seed": int(rec["seed"]), "width": hwc.shape[1], "height": hwc.shape[0],
                         "channels": hwc.shape[2], "png": base64.b64encode(png_bytes(hwc)).decode()})
        return pd.DataFrame(rows)


@torch.no_grad()
def generate_image(G, seed: int, psi: float = 1.0, class_idx: int = 0) -> torch.Tensor:
    """One image [1, C, H, W] float for a seed: the same seed gives the same pixels on any machine."""
    if G.c_dim and not 0 <= class_idx < G.c_dim:
        raise ValueError(f"class_idx {class_idx} is outside this model's {G.c_dim} classes")
    z, c = seed_latents(G, seed, class_idx)
    return G(z, c, truncation_psi=psi)


def seed_latents(G, seed: int, class_idx: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(z [1, z_dim], one-hot c [1, c_dim]) of a seed, on G's device: z = randn from
    torch.Generator().manual_seed(seed) on the CPU, so the same seed gives the same latent on any machine."""
    device = next(G.parameters()).device
    z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(seed)).to(device)
    c = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim:
        c[0, class_idx] = 1
    return z, c


def signature():
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs = Schema([ColSpec("long", "seed"), ColSpec("double", "psi", required=False),
                     ColSpec("long", "class_idx", required=False)])
    outputs = Schema([ColSpec("long", "seed"), ColSpec("long", "width"), ColSpec("long", "height"),
                      ColSpec("long", "channels"), ColSpec("string", "png")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def pip_requirements() -> list[str]:
    """What a serving environment needs: this package (which brings torch, safetensors, mlflow)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return [f"stylegan3-ray=={version('stylegan3-ray')}"]
    except PackageNotFoundError:
        return ["stylegan3-ray"]


def save_pyfunc(network_file: str | os.PathLike, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write an MLflow pyfunc model directory at `path` that wraps the network file."""
    mlflow.pyfunc.save_model(
        path=str(path), python_model=GeneratorModel(),
        artifacts={NETWORK_ARTIFACT: str(network_file)},
        signature=signature(), input_example=pd.DataFrame({"seed": [0, 1], "psi": [1.0, 0.7]}),
        pip_requirements=pip_requirements(), metadata=metadata or {},
    )
    return Path(path)


def decode_png(b64: str) -> np.ndarray:
    """The `png` column of a prediction -> uint8 [H, W, C]."""
    import io

    from PIL import Image

    arr = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))
    return arr[:, :, None] if arr.ndim == 2 else arr
