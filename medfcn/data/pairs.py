"""Labelled pairs: an image and its label map, found by case name and read together.

Training (``medfcn train``) and calibration (``medfcn calibrate``) take their labelled scans from here: two
folders (or files) paired by case name through :func:`medfcn.data.discovery.pair_cases`, or a CSV/JSON list of
``image,label[,case]`` rows (paths relative to the list).

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

__all__ = ["LabelledPair", "find_pairs", "read_pair", "data_sha256"]

log = logging.getLogger(__name__)


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


def _listed_pairs(path: Path) -> list[LabelledPair]:
    try:
        text = path.read_text()
        rows = json.loads(text) if path.suffix.lower() == ".json" else list(csv.DictReader(text.splitlines()))
    except (OSError, ValueError) as exc:
        raise MedfcnError(f"cannot read the list of training pairs {path}: {exc}") from None
    if not isinstance(rows, list):
        raise MedfcnError(f"{path}: the list of training pairs must be a list of entries")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not isinstance(row.get("label"), str):
            raise MedfcnError(f"{path}: entry {i + 1} needs 'image' and 'label' (and optionally 'case')")
        image, label = ((path.parent / row[k]).resolve() for k in ("image", "label"))
        out.append(LabelledPair(str(row.get("case") or strip_suffix(image.name)), image, label))
    if not out:
        raise NoScansError(f"{path} lists no training pairs")
    return out


def read_pair(pair: LabelledPair) -> tuple[Scan, Scan]:
    """The image and label map of ``pair``, read. Raises :class:`MedfcnError` naming the case and the label file
    when the label map does not lie on the image's grid."""
    from medfcn.data.reader import read_scan

    image = read_scan(pair.image, case=pair.case)
    label = read_scan(pair.label, case=pair.case)
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
