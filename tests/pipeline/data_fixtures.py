"""Small image sources for the data tests, generated on the fly (no binary assets in the repo).

`make_source(root)` writes, under root/:
    cats/a.png, cats/b.jpg, cats/c.png     solid colours (RGB); c.png is 40x40, the others 48x48
    dogs/d.png                              grayscale (mode L), 48x48
    dogs/e.png                              non-square 64x32: black | green (central 32x32) | black
    dogs/f.png                              RGBA, fully transparent except an opaque red 8x8 top-left block
    dogs/broken.png                         a PNG cut in half (truncated)
    dogs/notes.png                          not an image at all
    top.png                                 at the root (no class folder), 48x48 blue
    dataset.json                            official format: {"labels": [[name, class], ...]}
It returns the expected facts the tests check against.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import PIL.Image

SOLID = {"cats/a.png": (200, 30, 40), "cats/b.jpg": (20, 180, 60), "cats/c.png": (10, 20, 230),
         "top.png": (0, 0, 255)}
LABELS = {"cats/a.png": 0, "cats/b.jpg": 0, "cats/c.png": 0, "dogs/d.png": 1, "dogs/e.png": 1,
          "dogs/f.png": 2, "dogs/broken.png": 1, "dogs/notes.png": 1, "top.png": 2}
GOOD = ["cats/a.png", "cats/b.jpg", "cats/c.png", "dogs/d.png", "dogs/e.png", "dogs/f.png", "top.png"]
CORRUPT = ["dogs/broken.png", "dogs/notes.png"]
ALL_SORTED = sorted(GOOD + CORRUPT)


def make_source(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cats").mkdir(exist_ok=True)
    (root / "dogs").mkdir(exist_ok=True)
    for name, colour in SOLID.items():
        size = 40 if name == "cats/c.png" else 48
        PIL.Image.new("RGB", (size, size), colour).save(root / name, quality=100 if name.endswith(".jpg") else None)
    gray = np.tile(np.arange(48, dtype=np.uint8)[None, :] * 5, (48, 1))
    PIL.Image.fromarray(gray, "L").save(root / "dogs/d.png")
    wide = np.zeros((32, 64, 3), dtype=np.uint8)
    wide[:, 16:48] = (0, 255, 0)
    PIL.Image.fromarray(wide, "RGB").save(root / "dogs/e.png")
    rgba = np.zeros((48, 48, 4), dtype=np.uint8)
    rgba[:8, :8] = (255, 0, 0, 255)
    PIL.Image.fromarray(rgba, "RGBA").save(root / "dogs/f.png")
    buf = io.BytesIO()
    PIL.Image.new("RGB", (48, 48), (5, 5, 5)).save(buf, format="PNG", compress_level=0)
    (root / "dogs/broken.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "dogs/notes.png").write_text("this is not a picture")
    (root / "dataset.json").write_text(json.dumps({"labels": [[n, c] for n, c in sorted(LABELS.items())]}))
    return root
