"""The results table of `python -m pipeline.metrics`: each metric with its value, unit, direction and meaning."""

from __future__ import annotations

import math

DESCRIPTIONS = {
    "eqt": ("dB", "higher", "EQ-T, integer translation"),
    "eqt_frac": ("dB", "higher", "EQ-T, sub-pixel translation"),
    "eqr": ("dB", "higher", "EQ-R, rotation"),
    "swd": ("x1e3", "lower", "sliced Wasserstein, mean of levels"),
    "fid": ("", "lower", "Frechet Inception distance"),
    "kid": ("", "lower", "kernel Inception distance"),
}


def format_table(results: dict, seconds: float) -> str:
    """Aligned rows: metric, value ("skipped" when not computed), unit, better, meaning; then the time taken."""
    rows = [("metric", "value", "unit", "better", "meaning")]
    for name, value in results.items():
        unit, better, meaning = DESCRIPTIONS.get(name, ("x1e3", "lower", f"SWD at {name[4:]} px") if
                                                  name.startswith("swd_") else ("", "", ""))
        text = "skipped" if value is None else ("inf" if math.isinf(value) else f"{value:.4f}")
        rows.append((name, text, unit, better, meaning))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"({seconds:.1f} s)")
    return "\n".join(lines)
