"""Labelled pairs: an image and its label map, found by case name and read together.

Training (``medfcn train``) and calibration (``medfcn calibrate``) take their labelled scans from here: two
folders (or files) paired by case name through :func:`medfcn.data.discovery.pair_cases`, or a CSV/JSON list of
``image,label[,case]`` rows (paths relative to the list). A list is bounded before any image is read: at most
:data:`MAX_LIST_BYTES` bytes and :data:`MAX_PAIRS` entries, each image, label map and case name once (a row
repeated a million times is a damaged list, not a training set).

>>> pair = LabelledPair("head", Path("img/head.nii.gz"), Path("lab/head.nii.gz"))
>>> pair.summary()
{'case': 'head', 'image': 'head.nii.gz', 'label': 'head.nii.gz'}
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medfcn.data.filenames import strip_suffix
from medfcn.errors import MedfcnError, NoScansError, UsageError

if TYPE_CHECKING:
    from medfcn.data.scan import Scan

__all__ = ["MAX_PAIRS", "MAX_LIST_BYTES", "LabelledPair", "find_pairs", "read_pair", "data_sha256"]

log = logging.getLogger(__name__)

MAX_PAIRS = 100_000
"""The most entries a list of training pairs may hold."""
MAX_LIST_BYTES = 32 << 20
"""The largest list of training pairs read (32 MiB: 100,000 entries of two 150-character paths)."""


@dataclass(frozen=True)
class LabelledPair:
    """One labelled case: the scan ``image`` and its label map ``label`` (files or DICOM folders)."""

    case: str
    image: Path
    label: Path

    def holds(self, path: Path) -> bool:
        """Whether ``path`` is the image or the label map, or lies inside either where it is a folder (a DICOM
        series), so that no output lands on an input."""
        path = Path(path).resolve()
        return any(
            path == f.resolve() or (f.is_dir() and path.is_relative_to(f.resolve())) for f in (self.image, self.label)
        )

    def summary(self) -> dict[str, str]:
        """What a model card records of the pair: the case and the two file names."""
        return {"case": self.case, "image": self.image.name, "label": self.label.name}


def find_pairs(images: str | Path = "", labels: str | Path = "", pairs: str | Path = "") -> list[LabelledPair]:
    """The labelled pairs of two folders (paired by case name) or of a CSV/JSON list ``pairs``.

    Raises :class:`UsageError` when neither is given, :class:`NoScansError` when nothing pairs and
    :class:`MedfcnError` for an unreadable list.
    """
    if pairs:
        return _listed_pairs(Path(pairs))
    if not (images and labels):
        raise UsageError("give --images and --labels (two folders or files), or --pairs LIST.csv/json")
    from medfcn.data.discovery import find_cases, pair_cases

    found = [[c for c in find_cases([side]) if c.error is None] for side in (images, labels)]
    paired = pair_cases(*found, sides=(f"images in {images}", f"labels in {labels}"))
    for missing in paired.only_first + paired.only_second:
        log.warning("case %s has no %s: left out", missing, "label" if missing in paired.only_first else "image")
    return [LabelledPair(c, Path(i.path), Path(la.path)) for c, i, la in paired.pairs]


def _too_many(path: Path, entries: int) -> MedfcnError:
    return MedfcnError(f"{path}: {entries:,} entries, more than the {MAX_PAIRS:,} a list of training pairs holds")


def _listed_pairs(path: Path) -> list[LabelledPair]:
    try:
        size = path.stat().st_size
        if size > MAX_LIST_BYTES:
            raise MedfcnError(
                f"{path}: a list of training pairs of {size:,} bytes, more than the {MAX_LIST_BYTES:,} medfcn reads"
            )
        text = path.read_text(encoding="utf-8")
        entries = text.count('"image"') if path.suffix.lower() == ".json" else text.count("\n") - 1
        if entries > MAX_PAIRS:  # counted before they are parsed: a million parsed rows take gigabytes
            raise MedfcnError(
                f"{path}: {entries:,} entries, more than the {MAX_PAIRS:,} a list of training pairs holds"
            )
        rows = json.loads(text) if path.suffix.lower() == ".json" else list(csv.DictReader(text.splitlines()))
    except (OSError, ValueError, csv.Error) as exc:
        raise MedfcnError(f"cannot read the list of training pairs {path}: {exc}") from None
    if not isinstance(rows, list):
        raise MedfcnError(f"{path}: the list of training pairs must be a list of entries")
    if len(rows) > MAX_PAIRS:
        raise MedfcnError(
            f"{path}: {len(rows):,} entries, more than the {MAX_PAIRS:,} a list of training pairs may hold"
        )
    out: list[LabelledPair] = []
    first: dict[tuple[str, str], int] = {}  # (what, value) -> the entry that named it first
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not isinstance(row.get("label"), str):
            raise MedfcnError(f"{path}: entry {i + 1} needs 'image' and 'label' (and optionally 'case')")
        image, label = ((path.parent / row[k]).resolve() for k in ("image", "label"))
        pair = LabelledPair(str(row.get("case") or strip_suffix(image.name)), image, label)
        for what, value in (("image", str(image)), ("label map", str(label)), ("case", pair.case)):
            if (what, value) in first:
                raise MedfcnError(
                    f"{path}: entry {i + 1} repeats the {what} {value} of entry {first[what, value] + 1}; "
                    "each image, label map and case may be listed once"
                )
            first[what, value] = i
        out.append(pair)
    if not out:
        raise NoScansError(f"{path} lists no training pairs")
    return out


def read_pair(pair: LabelledPair) -> tuple[Scan, Scan]:
    """The image and label map of ``pair``, read. Raises :class:`MedfcnError` naming the case and the label file
    when the label map does not lie on the image's grid, or naming the file when it holds NaN or infinite values
    (:func:`medfcn.data.reader.read_label_map`)."""
    from medfcn.data.reader import read_label_map, read_scan

    image = read_scan(pair.image, case=pair.case)
    label = read_label_map(pair.label, case=pair.case)
    diffs = image.grid.differences(label.grid)
    if diffs:
        raise MedfcnError(f"case {pair.case}: label map {pair.label} grid differs from the image's: {diffs[0]}")
    return image, label


def data_sha256(pairs: list[LabelledPair]) -> str:
    """One hash of every file's bytes (folders: every file in them), in case order."""
    h = hashlib.sha256()
    for pair in pairs:
        for path in (pair.image, pair.label):
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for f in files:
                h.update(f.read_bytes())
    return h.hexdigest()
