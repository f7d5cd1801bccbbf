"""Parser for tests/models/data/stylegan3-tables.txt: counts, schedules and state_dict listings read
off the official networks (facts about shapes, no code; summarised in docs/algorithm.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

TABLES = Path(__file__).parent / "data" / "stylegan3-tables.txt"


@dataclass
class Section:
    cfg: str
    res: int
    summary: dict = field(default_factory=dict)       # G params, mapping, synthesis, G bufs, D params, ...
    schedule: list = field(default_factory=list)      # dict per row (input row excluded)
    g_state: list = field(default_factory=list)       # (key, kind, shape tuple, dtype)
    d_state: list = field(default_factory=list)


def _shape(s: str) -> tuple:
    s = s.strip("[]").strip()
    return tuple(int(v) for v in s.split(",")) if s else ()


@lru_cache(maxsize=1)
def load_tables() -> dict:
    """{(cfg, res): Section}."""
    lines = TABLES.read_text().splitlines()
    sections: dict = {}
    summary_rows = {}
    cur = None
    mode = None
    header = None
    for line in lines:
        m = re.match(r"^(stylegan3-[tr])\s+(\d+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+(\d+)"
                     r"\s+(\d+)\s+(\d+)\s+(\d+)\s*$", line)
        if m and cur is None:
            vals = [int(v.replace(",", "")) for v in m.groups()[2:]]
            summary_rows[(m.group(1), int(m.group(2)))] = dict(zip(
                ["G_params", "mapping", "synthesis", "G_bufs", "D_params", "D_bufs", "G_keys", "D_keys", "num_ws"],
                vals))
            continue
        m = re.match(r"^== (stylegan3-[tr]) @ (\d+)x\d+ ==", line)
        if m:
            cur = Section(m.group(1), int(m.group(2)))
            cur.summary = summary_rows[(cur.cfg, cur.res)]
            sections[(cur.cfg, cur.res)] = cur
            mode = None
            continue
        if cur is None:
            continue
        if line.startswith("Synthesis schedule"):
            mode, header = "sched_header", None
            continue
        if line.startswith("G state_dict"):
            mode = "g"
            continue
        if line.startswith("D state_dict"):
            mode = "d"
            continue
        if mode in ("sched_header", "sched"):
            parts = line.split()
            if parts and parts[0] == "name":
                header, mode = parts, "sched"
            elif mode == "sched" and parts and parts[0] != "input" and header and len(parts) == len(header):
                cur.schedule.append(dict(zip(header, parts)))
            continue
        if mode in ("g", "d"):
            m = re.match(r"^\s+(\S+)\s+(param|buffer)\s+(\[[\d, ]*\])\s+(\S+)\s*$", line)
            if m:
                (cur.g_state if mode == "g" else cur.d_state).append(
                    (m.group(1), m.group(2), _shape(m.group(3)), m.group(4)))
    return sections
