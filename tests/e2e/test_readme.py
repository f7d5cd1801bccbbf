"""Every command in README.md's bash blocks, run the way a user runs it: through bash, in a fresh directory that is
the user's home (so `~/…` and `./mlflow.db` mean what the README says), with the services the commands expect (an
S3 server holding `s3://my-bucket`, a local MLflow store, a private local Ray).

Commands whose README numbers would take too long here run at tiny settings: the table RUN_AS gives, for each
README command, the exact command run here, so a reader sees what differs. A README command that is missing from
RUN_AS (a new or changed example) fails the test until it is added, and each one that runs must exit 0 and
produce what the README says. Commands that need a running cluster or a cloud account name the test that
runs them (ELSEWHERE).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"

TRAIN_TINY = "--kimg 0.016 --tick 0.008 --snap 1"

# README command -> the command run here (the same text where it is fast enough as written).
RUN_AS = {
    "python -m pipeline.dataset build ~/photos s3://my-bucket/photos256 --resolution 256 --transform center-crop":
        "python -m pipeline.dataset build ~/photos s3://my-bucket/photos256 --resolution 32 --transform center-crop",
    "python -m pipeline.dataset build demo:emoji outputs/emoji64 --resolution 64":
        "python -m pipeline.dataset build demo:emoji outputs/emoji64 --resolution 64 --max-images 48",
    "python -m pipeline.dataset info outputs/emoji64 --grid outputs/emoji64.png":
        "python -m pipeline.dataset info outputs/emoji64 --grid outputs/emoji64.png",
    "python -m pipeline.train":
        f"python -m pipeline.train {TRAIN_TINY}",
    "python -m pipeline.train --kimg 20":
        "python -m pipeline.train --kimg 0.024 --tick 0.008",
    "python -m pipeline.train --cfg stylegan3-t --data s3://my-bucket/photos256 --batch 32 --gamma 2 --workers 8 "
    "--mirror 1 --storage s3://my-bucket/runs --run-name photos256-t":
        "python -m pipeline.train --cfg stylegan3-t --data s3://my-bucket/photos256 --batch 4 --gamma 2 --workers 1 "
        "--mirror 1 --storage s3://my-bucket/runs --run-name photos256-t --cbase 256 --cmax 16 --kimg 0.004 "
        "--tick 0.004 --tracking 0",
    "python -m pipeline.registry list":
        "python -m pipeline.registry list",
    "python -m pipeline.registry show stylegan3-emoji-t":
        "python -m pipeline.registry show stylegan3-emoji-t",
    "python -m pipeline.generate --model models:/stylegan3-emoji-t@latest --seeds 0-15 --outdir out/ "
    "--grid out/grid.png":
        "python -m pipeline.generate --model models:/stylegan3-emoji-t@latest --seeds 0-15 --outdir out/ "
        "--grid out/grid.png",
    "python -m pipeline.generate --model models:/stylegan3-emoji-t@latest --video rotate --seeds 0 --outdir out/":
        "python -m pipeline.generate --model models:/stylegan3-emoji-t@latest --video rotate --seeds 0 --outdir out/ "
        "--frames 4",
    "python -m pipeline.metrics --model models:/stylegan3-emoji-t@latest --metrics eqt,eqt_frac,eqr,swd "
    "--data ~/.cache/stylegan3-ray/demo-emoji-faces-16px-3ch --num 100":
        "python -m pipeline.metrics --model models:/stylegan3-emoji-t@latest --metrics eqt,eqt_frac,eqr,swd "
        "--data ~/.cache/stylegan3-ray/demo-emoji-faces-16px-3ch --num 4 --batch 2 --no-progress",
}

# README commands run by other tests (a cluster to submit to, a 4-trial sweep, a model server on a free port).
ELSEWHERE = {
    "mlflow models serve -m models:/stylegan3-emoji-t/latest --env-manager local -h 127.0.0.1 -p 5001":
        "tests/pipeline/test_tracking.py",
    "ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m pipeline.train "
    "--data s3://my-bucket/photos256 …": "tests/e2e/test_job_submit.py",
    "python -m pipeline.tune --data s3://my-bucket/photos256 --cfg stylegan3-t --batch 32 --num-samples 16 "
    "--kimg-per-trial 500 --storage s3://my-bucket/sweeps --name photos256-gamma": "tests/pipeline/test_tune.py",
}


def readme_commands(text: str) -> list[str]:
    """The commands of every ```bash block: continuation lines joined, trailing comments and prompts removed."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
    return commands


QUICK_START = re.compile(r"^python3 -m venv \.venv && \. \.venv/bin/activate && pip install torch==2\.13\.0 && "
                         r"pip install -e (\S+) && (.+)$")


def test_every_readme_command_is_covered_and_the_install_commands_match_ci():
    commands = readme_commands(README.read_text())
    installs = [c for c in commands if QUICK_START.match(c)]
    assert len(installs) == 2, installs
    run_cmd, test_cmd = (QUICK_START.match(c).group(2) for c in installs)
    assert run_cmd in RUN_AS  # the quick start's job: the embedded default, run below
    # The test command is the one CI runs, step for step.
    ci = [line.strip() for line in CI_RUN.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert "pip install -q torch==2.13.0" in ci and "pip install -q -e '.[test]'" in ci
    assert test_cmd == "python -m pytest -q" and "python -m pytest -q" in ci
    rest = [c for c in commands if c not in installs]
    missing = [c for c in rest if c not in RUN_AS and c not in ELSEWHERE]
    assert not missing, f"README commands with no test (add them to RUN_AS or ELSEWHERE): {missing}"
    stale = [c for c in list(RUN_AS) + list(ELSEWHERE) if c not in rest]
    assert not stale, f"commands no longer in README.md: {stale}"
    for path in ELSEWHERE.values():
        assert (ROOT / path).is_file(), path


@pytest.fixture
def home(tmp_path, s3_server):
    """A fresh user home: ~/photos holds a few images; s3://my-bucket exists; nothing else."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        # Unequal sizes, so center-crop has work to do.
        Image.new("RGB", (40 + 8 * i, 36), (40 * i, 255 - 30 * i, 90)).save(photos / f"p{i}.png")
    from pipeline import storage

    client = storage.boto3_client()
    if "my-bucket" not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket="my-bucket")
    return tmp_path


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "STYLEGAN3_CACHE", "RAY_ADDRESS")}
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", PYTHONPATH=str(ROOT),
               TQDM_DISABLE="1")
    return env


def run(command: str, home: Path, timeout: int = 600) -> str:
    """Run one README command through bash in `home`; return its output (stdout + stderr); fail on exit != 0."""
    proc = subprocess.run(["bash", "-c", command], cwd=home, env=_env(home), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    if os.environ.get("README_TRANSCRIPT"):  # a record of what each command printed, for people to read
        with open(os.environ["README_TRANSCRIPT"], "a") as f:
            f.write(f"$ {command}\n{out}\n[exit {proc.returncode}]\n\n")
    assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{out[-4000:]}"
    return out


# ~3 min on an idle machine (a dozen commands, each importing torch, three of them starting Ray); a loaded CI
# machine may take several times that.
@pytest.mark.timeout(1800)
def test_readme_commands_work_as_written(home):
    out = {readme: None for readme in RUN_AS}

    def do(readme: str) -> str:
        out[readme] = run(RUN_AS[readme], home)
        return out[readme]

    # 1. Shards.
    text = do("python -m pipeline.dataset build ~/photos s3://my-bucket/photos256 --resolution 256 "
              "--transform center-crop")
    assert "6" in text
    do("python -m pipeline.dataset build demo:emoji outputs/emoji64 --resolution 64")
    text = do("python -m pipeline.dataset info outputs/emoji64 --grid outputs/emoji64.png")
    assert "48" in text and (home / "outputs" / "emoji64.png").read_bytes()[:4] == b"\x89PNG"

    # 2. The embedded default (the quick start's job): our lines only, the run registered as the README says.
    text = do("python -m pipeline.train")
    lines = text.splitlines()
    assert lines[0].startswith("demo data: demo:emoji-faces shards at 16x16"), text
    assert sum(line.startswith("tick ") for line in lines) == 2, text
    assert "latest checkpoint:" in text and "fakes grid:" in text
    # The quality curve: the metric at the first and last snapshot, and the picture beside the checkpoints.
    assert any(line.startswith("  quality (SWD):") and "->" in line for line in lines), text
    assert (home / "outputs" / "runs" / "demo-emoji-faces16-t" / "progress.png").read_bytes()[:4] == b"\x89PNG"
    for noise in ("RayTrainWorker", "TrainController", "Reporting training result", "Execution plan",
                  "Failed to query", "PlacementGroupCleaner", "Traceback"):
        assert noise not in text, f"{noise!r} in the embedded default's output:\n{text}"
    run_dir = home / "outputs" / "runs" / "demo-emoji-faces16-t"
    assert len(list(run_dir.glob("checkpoint_*/fakes.png"))) == 2
    # The same run, continued.
    text = do("python -m pipeline.train --kimg 20")
    assert "resuming from" in text and sum(line.startswith("tick 3") for line in text.splitlines()) == 1, text

    # 3. Training on the user's own shards in S3.
    text = do("python -m pipeline.train --cfg stylegan3-t --data s3://my-bucket/photos256 --batch 32 --gamma 2 "
              "--workers 8 --mirror 1 --storage s3://my-bucket/runs --run-name photos256-t")
    assert "s3://my-bucket/runs/photos256-t/checkpoint_" in text, text

    # 4. The registry and the model sources.
    text = do("python -m pipeline.registry list")
    assert "stylegan3-emoji-t" in text and "3" in text.split("stylegan3-emoji-t", 1)[1].splitlines()[0]
    text = do("python -m pipeline.registry show stylegan3-emoji-t")
    assert "uri: models:/stylegan3-emoji-t/3" in text, text
    text = do("python -m pipeline.generate --model models:/stylegan3-emoji-t@latest --seeds 0-15 --outdir out/ "
              "--grid out/grid.png")
    assert "Warning" not in text and "Downloading artifacts" not in text, text  # our lines only
    assert len(list((home / "out").glob("seed00*.png"))) == 16 and (home / "out" / "grid.png").is_file()
    do("python -m pipeline.generate --model models:/stylegan3-emoji-t@latest --video rotate --seeds 0 --outdir out/")
    assert (home / "out" / "rotate-seed0.mp4").stat().st_size > 0
    text = do("python -m pipeline.metrics --model models:/stylegan3-emoji-t@latest --metrics eqt,eqt_frac,eqr,swd "
              "--data ~/.cache/stylegan3-ray/demo-emoji-faces-16px-3ch --num 100")
    for name in ("eqt", "eqt_frac", "eqr", "swd"):
        assert any(line.split()[:1] == [name] for line in text.splitlines()), text



def test_read_only_commands_leave_no_files_and_print_one_error(tmp_path):
    """A failed model look-up in a directory with no MLflow store: exit 2, one line naming the store and what to
    do, no mlflow.db created, none of MLflow's own lines."""
    for command in ("python -m pipeline.generate --model models:/missing@x",
                    "python -m pipeline.metrics --model models:/missing/1",
                    "python -m pipeline.registry show models:/missing@x"):
        proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        err = proc.stderr.strip()
        assert err.count("\n") == 0 and err.startswith("error: ") and "no MLflow database" in err, (command, err)
        assert list(tmp_path.iterdir()) == [], (command, list(tmp_path.iterdir()))
    text = run("python -m pipeline.registry list", tmp_path)
    assert "no registered models" in text and list(tmp_path.iterdir()) == []
