"""Search spaces of a sweep: the strings of --gamma/--glr/--dlr, their Ray Tune domains, the default spaces around
the rule of thumb (docs/algorithm.md "Recommended settings") and whether a metric is minimised or maximised."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ray import tune

from pipeline.metrics.core import LOWER_IS_BETTER
from pipeline.training.config import PRESETS

TUNED = ("gamma", "glr", "dlr")  # the searched hyper-parameters, in table order
GAMMA_SPAN = 8.0  # default gamma space: rule-of-thumb value /8 .. x8
LR_SPAN = 4.0  # default learning-rate spaces: preset /4 .. x4


class SpaceError(ValueError):
    """A search-space string that does not parse; the message names the flag, the text and the valid forms."""


@dataclass(frozen=True)
class Space:
    """One parsed search-space string. kind: 'fixed' | 'loguniform' | 'uniform' | 'choice'."""

    kind: str
    values: tuple[float, ...]  # fixed: (v,); (log)uniform: (lo, hi); choice: the options

    def domain(self):
        """The Ray Tune domain (a plain float for 'fixed')."""
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "loguniform":
            return tune.loguniform(*self.values)
        if self.kind == "uniform":
            return tune.uniform(*self.values)
        return tune.choice(list(self.values))

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.values[0]:g}"
        if self.kind == "choice":
            return "choice:" + ",".join(f"{v:g}" for v in self.values)
        return f"{self.kind}:{self.values[0]:g}:{self.values[1]:g}"


def parse_space(text: str, flag: str = "value") -> Space:
    """Parse `loguniform:LO:HI`, `uniform:LO:HI`, `choice:A,B,C` or a plain number (all values > 0).

    Raises SpaceError with one sentence naming the flag, the text and the accepted forms."""
    forms = "use loguniform:LO:HI, uniform:LO:HI, choice:A,B,C or a plain number, e.g. loguniform:0.25:16"

    def num(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise SpaceError(f"{flag} {text!r}: {s!r} is not a number; {forms}") from None
        if not math.isfinite(v) or v <= 0:
            raise SpaceError(f"{flag} {text!r}: {s!r} must be a positive number")
        return v

    text = text.strip()
    kind, sep, rest = text.partition(":")
    if not sep:
        return Space("fixed", (num(text),))
    kind = kind.lower()
    if kind in ("loguniform", "uniform"):
        parts = rest.split(":")
        if len(parts) != 2:
            raise SpaceError(f"{flag} {text!r}: {kind} takes two bounds, {kind}:LO:HI")
        lo, hi = num(parts[0]), num(parts[1])
        if not lo < hi:
            raise SpaceError(f"{flag} {text!r}: the lower bound {lo:g} must be below the upper bound {hi:g}")
        return Space(kind, (lo, hi))
    if kind == "choice":
        opts = tuple(num(s) for s in rest.split(",") if s.strip())
        if not opts:
            raise SpaceError(f"{flag} {text!r}: choice needs at least one value, choice:A,B,C")
        return Space("choice", opts)
    raise SpaceError(f"{flag} {text!r}: unknown kind {kind!r}; {forms}")


def default_spaces(resolution: int, cfg: str) -> dict[str, Space]:
    """gamma log-uniform /8..x8 around 2·(res/256)² (0.5 at 128², 2 at 256², x4 per doubling, docs/algorithm.md "Recommended settings");
    glr and dlr log-uniform /4..x4 around the preset's."""
    gamma = 2.0 * (resolution / 256) ** 2
    preset = PRESETS[cfg]
    return {"gamma": Space("loguniform", (gamma / GAMMA_SPAN, gamma * GAMMA_SPAN)),
            "glr": Space("loguniform", (preset["glr"] / LR_SPAN, preset["glr"] * LR_SPAN)),
            "dlr": Space("loguniform", (preset["dlr"] / LR_SPAN, preset["dlr"] * LR_SPAN))}


def metric_mode(metric: str) -> str:
    """'min' for swd/fid/kid, 'max' for the equivariance metrics (dB)."""
    return "min" if metric in LOWER_IS_BETTER else "max"
