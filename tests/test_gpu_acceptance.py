"""bench/gpu_acceptance.py --dry: the GPU acceptance script's CI run (CPU, Triton interpreter, tiny sizes).

It runs as on the lent GPU machines, which have torch, triton, numpy, scipy, pillow and pytest only: a
`sitecustomize` on PYTHONPATH makes Ray, MLflow, webdataset, boto3, pyarrow and safetensors unimportable in the
script and in the pytest process it starts, so an import of any of them anywhere on its path fails the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("ray", "mlflow", "webdataset", "boto3", "pyarrow", "safetensors")

SITECUSTOMIZE = textwrap.dedent(f"""
    import sys

    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not on the GPU machines)")
            return None

    sys.meta_path.insert(0, _Block())
""")


def test_gpu_acceptance_dry_run(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "STYLEGAN3_OPS_IMPL")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), env.get("PYTHONPATH", "")])
    out = tmp_path / "out"
    t0 = time.monotonic()
    # 25 s on a quiet 2-core machine, 135 s at load 10; the budget only keeps a loaded CI machine from failing it.
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_acceptance.py"), "--dry", "--out", str(out),
                           "--budget-s", "480"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - t0
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, log
    data = json.loads((out / "gpu_acceptance.json").read_text())
    md = (out / "gpu_acceptance.md").read_text()
    s = data["sections"]
    assert data["not_reached"] == [], log
    assert data["meta"]["stubbed"] == ["safetensors"], "the stub stands in for the missing package"
    assert [r["cfg"] for r in s["g_equivalence"]] == ["stylegan3-t", "stylegan3-r"]
    assert all(r["ok"] for r in s["g_equivalence"]), s["g_equivalence"]
    tests = s["gpu_tests"]
    assert tests["counts"]["failed"] == 0 and tests["counts"]["skipped"] >= 5, tests  # skipped without CUDA
    assert {t["test"].split("::")[0] for t in tests["tests"]} == set(tests["files"]), "every gpu file collected"
    for r in s["train_step"]:
        assert "error" not in r and r["finite"] and r["s_per_kimg"] > 0, r
    ops = s["ops"]["rows"]
    assert {(r["cfg"], r["op"]) for r in ops} >= {("t", "filtered_lrelu"), ("r", "upfirdn2d"), ("r", "bias_act")}
    for r in ops:
        assert "error" not in r["triton"] and "error" not in r["ref"] and "diff_error" not in r, r
        assert r["max_abs_diff"] <= 1e-2 * max(r["max_abs_ref"], 1.0), r  # fp16 layers: rounding only
    for title in ("## G on the device", "## Tests marked gpu", "## One training step", "## Ops per layer",
                  "49.81"):
        assert title in md
    print(f"gpu_acceptance --dry: {seconds:.0f} s")
