"""The MLflow pyfunc form of a generator: our network file (safetensors + JSON config) behind a small wrapper.

No pickled torch module (docs/platform.md "MLflow"): the model directory holds the network file as an artifact and
carries the code that reads it (`code/`: the packages `models` and `ops`, and of `pipeline` only this module and
the pixel conversions it uses), so a serving environment needs only public packages (`pip_requirements()`: torch pinned to the
version that trained it, numpy, scipy, pandas, pillow, safetensors, mlflow), never this project's own
distribution. The bundled copy is first on `sys.path` in a serving process; a process that already imported these
packages (training, tests) keeps its own.

Input (a DataFrame, or JSON `{"dataframe_records": [...]}` when served):
    seed      long    latent seed (z = randn(z_dim) from torch.Generator().manual_seed(seed))
    psi       double  truncation ψ (optional, default 1)
    class_idx long    label for conditional models (optional, default 0; ignored when unconditional)
Output: one row per input row: seed, width, height, channels, png (base64-encoded PNG of the image).
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

import models
import ops
from pipeline.pixels import png_bytes, to_uint8

NETWORK_ARTIFACT = "network"


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """Serves images of G_ema for (seed, psi, class_idx) rows."""

    # `predict` is typed (MLflow 3 checks its hints when the class is defined): a DataFrame in and out. The
    # columns are described by the explicit `signature()` below, which MLflow enforces on every request.

    def load_context(self, context) -> None:
        net = models.load_network(context.artifacts[NETWORK_ARTIFACT])
        self.G = (net.G_ema if net.G_ema is not None else net.G).eval().requires_grad_(False)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
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


# The distributions a serving environment installs (their import names in `_IMPORTS`), pinned to what is
# running here, as MLflow pins the requirements it infers.
_REQUIREMENTS = ("mlflow", "torch", "numpy", "scipy", "pandas", "pillow", "safetensors")


def pip_requirements() -> list[str]:
    """What a serving environment needs, all from public indexes: no `stylegan3-ray` (the model carries its code).

    torch is pinned to its public version (`2.13.0`, without a local tag such as `+cpu`): unpinned, pip would pick
    the newest build, which on Linux is the multi-GB CUDA one. Where the serving machine should get the CPU build,
    point pip at PyTorch's CPU index (PIP_EXTRA_INDEX_URL) before `mlflow models serve`."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in _REQUIREMENTS:
        try:
            reqs.append(f"{dist}=={version(dist).split('+', 1)[0]}")
        except PackageNotFoundError:
            reqs.append(dist)
    return reqs


def _stage_code(dest: Path) -> list[str]:
    """Copy the code a loaded model runs into `dest` (models/, ops/ and a `pipeline` package of this module and
    the pixel conversions); returns the paths for MLflow's `code_paths`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    dest.mkdir(parents=True)
    paths = []
    for pkg in (models, ops):
        src = Path(pkg.__file__).resolve().parent
        shutil.copytree(src, dest / src.name, ignore=ignore)
        paths.append(str(dest / src.name))
    (dest / "pipeline").mkdir()
    (dest / "pipeline" / "__init__.py").write_text('"""stylegan3-ray: the parts a served generator needs."""\n')
    for path in (Path(__file__), Path(sys.modules[png_bytes.__module__].__file__)):  # this module, its pixels
        shutil.copy2(path, dest / "pipeline" / path.name)
    paths.append(str(dest / "pipeline"))
    return paths


INPUT_EXAMPLE = {"seed": [0], "psi": [1.0]}
# The model's code file (MLflow's "models from code": no pickled Python object in the model).
_MODEL_CODE = ('"""The served StyleGAN3 generator: pipeline.pyfunc.GeneratorModel (stylegan3-ray)."""\n'
               "import mlflow.models\n\nfrom pipeline.pyfunc import GeneratorModel\n\n"
               "mlflow.models.set_model(GeneratorModel())\n")


def log_generator(network_file: str | os.PathLike, name: str, model_id: str, metadata: dict | None = None):
    """Write the pyfunc model of `network_file` into the existing LoggedModel `model_id` (MLflow 3's
    `mlflow.pyfunc.log_model(name=..., model_id=...)`, under the current tracking URI). Returns its ModelInfo."""
    with tempfile.TemporaryDirectory(prefix="sg3-code-") as tmp:
        code = Path(tmp) / "generator_model.py"
        code.write_text(_MODEL_CODE)
        return mlflow.pyfunc.log_model(
            name=name, model_id=model_id, python_model=str(code),
            artifacts={NETWORK_ARTIFACT: str(network_file)}, code_paths=_stage_code(Path(tmp) / "code"),
            signature=signature(), input_example=pd.DataFrame(INPUT_EXAMPLE),
            pip_requirements=pip_requirements(), metadata=metadata or {},
        )


def decode_png(b64: str) -> np.ndarray:
    """The `png` column of a prediction -> uint8 [H, W, C]."""
    import io

    from PIL import Image

    arr = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))
    return arr[:, :, None] if arr.ndim == 2 else arr
