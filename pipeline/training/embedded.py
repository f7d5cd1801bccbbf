"""The embedded default: the flags of a run on a bundled demo set (`python -m pipeline.train` with no --data, or with
--data demo:emoji...), the embedded default's settings under the user's flags (docs/training.md "The embedded
default")."""

from __future__ import annotations

import argparse

from pipeline.data.demo import DEMO_DATA, DEMO_RESOLUTION
from pipeline.data.sources import DEMO_SETS
from pipeline.training.flags import add_train_flags

# The embedded default: a small StyleGAN3-T at 16x16 on the 100 smiley faces of the bundled set, which learns
# visibly (round yellow faces with eyes and mouths, the SWD falling to about a third) within 10 minutes on a
# 2-core CPU; what was tried and measured is in docs/training.md "The embedded default". Same meaning as the flags
# of the same names.
DEMO_ARGS = ["--cfg", "stylegan3-t", "--batch", "8", "--cbase", "1024", "--cmax", "32", "--mirror", "1",
             "--glr", "0.005", "--dlr", "0.005", "--kimg", "6", "--tick", "0.5", "--snap", "2", "--keep", "2",
             "--workers", "1", "--cpus-per-worker", "1"]
DEMO_RUN_NAME = "demo-emoji-faces16-t"  # = demo_run_name(DEMO_DATA)


def demo_run_name(source: str) -> str:
    """The readable run name of a demo set under the embedded default's settings, e.g. demo-emoji-faces16-t."""
    return f"{source.replace(':', '-')}{DEMO_RESOLUTION}-t"


# Flags that leave the demo's training trajectory as it is (the derived run name ignores them too): with only
# these on top of the embedded default, the run keeps the name DEMO_RUN_NAME, so `--kimg 2` continues it.
SAME_RUN_FLAGS = {"--kimg", "--tick", "--snap", "--keep", "--workers", "--cpus-per-worker", "--use-gpu",
                  "--storage", "--max-failures", "--metrics", "--quality", "--experiment", "--model-name", "--tracking",
                  "--data"}


def _parser() -> argparse.ArgumentParser:
    return add_train_flags(argparse.ArgumentParser(add_help=False))


def demo_argv(argv: list[str], parser: argparse.ArgumentParser | None = None) -> list[str] | None:
    """The flags of a run on the bundled demo set (no --data, or --data demo:emoji): the embedded default's
    settings, then the user's flags over them; None when `argv` names other data. parser: the command's (its
    --help and errors answer here); default: the bare train flags."""
    parser = parser or _parser()
    parsed = parser.parse_args(argv)
    if parsed.data is not None and parsed.data not in DEMO_SETS:
        return None
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    # Only flags that keep the trajectory: the run keeps its readable name (and resumes with a larger --kimg).
    name = ["--run-name", demo_run_name(parsed.data or DEMO_DATA)] if given <= SAME_RUN_FLAGS else []
    full = DEMO_ARGS + name + list(argv)
    if "--model-name" not in given:  # the registered name the README's commands use: stylegan3-emoji-t (or -r)
        full += ["--model-name", "stylegan3-emoji-" + parser.parse_args(full).cfg.removeprefix("stylegan3-")]
    return full
