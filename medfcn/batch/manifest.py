"""The record of a batch run: one entry per case, written as ``OUT/manifest.json``.

The manifest is rewritten atomically (:func:`medfcn.data.writer.atomic_write_text`) each time a case finishes, so a
batch killed at any moment leaves a readable manifest that lists the cases finished so far, in discovery order.
Layout::

    {"medfcn_version": "0.3.0",
     "model": {"name", "path", "sha256", "architecture", "variant", "labels", "spacing"},
     "device": "cpu", "precision": "bfloat16" (the network's arithmetic), "backend": "torch" (what ran it:
     torch, onnxruntime or openvino),
     "started": ISO 8601, "finished": ISO 8601 or null while running,
     "summary": {"ok": 3, "failed": 1, "skipped": 2, "flagged": 1, "total": 6},
     "cases": [{"input", "case", "series_uid", "output", "status", "error", "seconds", "shape", "spacing",
                "device", "precision", "backend", "timing": {"read", "segment", "write"}, "warnings": [...],
                "quality": {"review", "score", "reasons"},
                "sha256", "output_sha256", "model_sha256", "input_stamp", "outputs": [every file of the case],
                "border_mm", "statistics": {label: {"voxels", "volume_ml", "mean", ...}}}, ...]}

``seconds`` is the work done for a case (reading + segmenting + writing, s); ``shape`` (voxels) and ``spacing`` (mm)
are those of the scan, which the label map shares. ``output`` is ``null`` for a failed case (an output from an
earlier run is left in place, but no longer counts as done). ``warnings`` lists what was noticed and repaired while
reading (non-finite voxels replaced, a DICOM series without PixelSpacing, unreadable files left out of a series)
and by the segmentation (a label map with no voxel of any label: written, and said, since a blank or foreign
scan gives one).
``quality`` is the case's verdict (:mod:`medfcn.inference.verdict`): ``review`` (a person should check it),
``score`` (0..1, higher is more trustworthy) and ``reasons`` in words; ``summary.flagged`` counts the cases up for
review. With ``--skip-flagged`` a flagged case is ``flagged``: segmented, no label map written (``output`` null).
``sha256`` is the label map file's SHA-256 (written, read back whole and verified), ``output_sha256`` that of every
file of the case by name (``--format``), ``model_sha256`` that of the model file that made it, ``input_stamp`` a
fingerprint of the input files' names, sizes and modification times: a rerun skips a case only when all three still
hold. ``border_mm`` is the ``--border`` the labels were made with (absent: 0) and ``statistics`` (``--statistics``)
each label's volume (mL) and the input's intensities inside it (see :mod:`medfcn.data.statistics`).

>>> entry = CaseResult(input="t1.nii.gz", case="t1", output=None, status="failed", error="t1.nii.gz: empty file")
>>> entry.status, CaseResult.from_dict(entry.to_dict()) == entry
(<Status.FAILED: 'failed'>, True)
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from medfcn import __version__
from medfcn.data.discovery import CaseSpec, is_batch_output, safe_name
from medfcn.data.filenames import MASKED_SUFFIX
from medfcn.data.writer import atomic_write_text
from medfcn.errors import UsageError

__all__ = [
    "Status",
    "CaseResult",
    "Manifest",
    "MANIFEST_NAME",
    "now_iso",
    "read_manifest",
    "segmented_cases",
    "read_verdicts",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


class Status(StrEnum):
    """What happened to a case: segmented, failed (see ``error``), or skipped (its output already existed)."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    FLAGGED = "flagged"  # segmented and flagged for review; no label map written (``--skip-flagged``)


def now_iso() -> str:
    """The local time with its UTC offset, to the second (``2025-01-31T14:02:11+01:00``)."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass
class CaseResult:
    """One case of a batch: where it came from, where its label map went, and what happened."""

    input: str
    case: str
    output: str | None
    status: Status
    series_uid: str | None = None
    error: str | None = None
    seconds: float | None = None
    shape: list[int] | None = None
    spacing: list[float] | None = None
    device: str | None = None
    precision: str | None = None  # the network's arithmetic for this case's labels (float32, bfloat16, float16)
    backend: str | None = None  # what ran the network for this case's labels (torch, onnxruntime, openvino)
    timing: dict[str, float] = field(default_factory=dict)
    outputs: list[str] | None = None  # every file written for the case (--format), ``output`` being the first
    warnings: list[str] = field(default_factory=list)
    sha256: str | None = None
    output_sha256: dict[str, str] = field(default_factory=dict)
    model_sha256: str | None = None
    input_stamp: str | None = None
    quality: dict[str, Any] | None = None  # {"review", "score", "reasons"}: medfcn.inference.verdict.Verdict
    border_mm: float | None = None  # --border: the distance the labels' border was moved (mm), when not 0
    statistics: dict[str, dict[str, Any]] | None = None  # --statistics: per label, medfcn.data.statistics

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, keys in the manifest's order."""
        out = asdict(self)
        order = [
            "input",
            "case",
            "series_uid",
            "output",
            "status",
            "error",
            "seconds",
            "shape",
            "spacing",
            "device",
            "precision",
            "backend",
            "quality",
        ]
        ordered = {k: out.pop(k) for k in order}
        ordered["status"] = str(self.status)
        return {**ordered, **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Manifest:
    """The cases of a batch run and the model, device and time it ran with.

    ``cases`` holds the finished cases in discovery order; ``total`` is how many were found.
    """

    path: Path
    model: dict[str, Any]
    device: str
    precision: str = ""  # the arithmetic this run computes with (the file says that of the outputs it lists)
    backend: str = ""  # what runs the network in this run (the file says what made the outputs it lists)
    total: int = 0
    started: str = field(default_factory=now_iso)
    finished: str | None = None
    cases: list[CaseResult] = field(default_factory=list)
    medfcn_version: str = __version__

    def count(self, status: Status | str) -> int:
        return sum(1 for c in self.cases if c.status == status)

    @property
    def ok(self) -> int:
        return self.count(Status.OK)

    @property
    def failed(self) -> int:
        return self.count(Status.FAILED)

    @property
    def skipped(self) -> int:
        return self.count(Status.SKIPPED)

    @property
    def flagged(self) -> list[CaseResult]:
        """The cases whose quality verdict puts them up for review (written or not)."""
        return [c for c in self.cases if c.quality and c.quality.get("review")]

    def flagged_line(self, limit: int = 10) -> str:
        """``K of N cases flagged for review: case (reason); ...`` over the cases with a verdict (the first
        ``limit`` named, least trustworthy first)."""
        judged = [c for c in self.cases if c.quality]
        flagged = sorted(self.flagged, key=lambda c: float(c.quality.get("score", 0.0)))
        line = f"{len(flagged)} of {len(judged)} cases flagged for review"
        if not flagged:
            return line
        named = "; ".join(f"{c.case} ({(c.quality.get('reasons') or ['score'])[0]})" for c in flagged[:limit])
        more = f"; and {len(flagged) - limit} more (see manifest.json)" if len(flagged) > limit else ""
        return f"{line}: {named}{more}"

    @property
    def exit_code(self) -> int:
        """1 if any case failed, else 0 (the CLI's exit status)."""
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "medfcn_version": self.medfcn_version,
            "model": self.model,
            "device": self.device,
            "precision": self.outputs_precision(),
            "backend": self.outputs_backend(),
            "started": self.started,
            "finished": self.finished,
            "summary": {
                "ok": self.ok,
                "failed": self.failed,
                "skipped": self.skipped,
                "flagged": len(self.flagged),
                "total": self.total,
            },
            "cases": [c.to_dict() for c in self.cases],
        }

    def outputs_precision(self) -> str:
        """The arithmetic of the outputs the manifest lists (made or kept): their entries' ``precision``,
        comma-separated when they differ (a rerun with ``--float32`` keeps cases an earlier run made in bfloat16);
        this run's when none is listed yet."""
        done = sorted({c.precision for c in self.cases if c.precision and c.status in (Status.OK, Status.SKIPPED)})
        return ", ".join(done) or self.precision

    def outputs_backend(self) -> str:
        """What ran the network for the outputs the manifest lists (as :meth:`outputs_precision`)."""
        done = sorted({c.backend for c in self.cases if c.backend and c.status in (Status.OK, Status.SKIPPED)})
        return ", ".join(done) or self.backend

    def write(self) -> Path:
        """Rewrite :attr:`path` atomically. Raises :class:`medfcn.errors.OutputError`."""
        return atomic_write_text(self.path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        """A manifest from its JSON file (raises ``OSError``/``ValueError`` for a missing or damaged one)."""
        path = Path(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("cases", []), list):
            raise ValueError("not an object with a list of cases")
        odd = next((i for i, c in enumerate(data.get("cases", []), 1) if not isinstance(c, dict)), None)
        if odd is not None:
            raise ValueError(f"case {odd} is not an entry")
        return cls(
            path=path,
            model=data.get("model", {}),
            device=data.get("device", ""),
            precision=data.get("precision", ""),
            backend=data.get("backend", ""),
            total=data.get("summary", {}).get("total", len(data.get("cases", []))),
            started=data.get("started", ""),
            finished=data.get("finished"),
            cases=[CaseResult.from_dict(c) for c in data.get("cases", [])],
            medfcn_version=data.get("medfcn_version", ""),
        )


def read_manifest(out_dir: str | Path) -> Manifest:
    """The manifest of the batch whose output folder is ``out_dir``. Raises :class:`UsageError`, one line naming the
    file, when there is none or it cannot be read (damaged, or edited by hand into something else)."""
    path = Path(out_dir) / MANIFEST_NAME
    try:
        return Manifest.read(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        message = f"{path}: not a medfcn batch's manifest ({e}); medfcn segment writes one into its output folder"
        raise UsageError(message) from None


def _batch_file(recorded: str, folder: Path) -> Path:
    """Where a file the manifest records lies now: as recorded when that is inside ``folder``, else by its name in
    ``folder`` (a batch folder moved or copied since its run), else as recorded."""
    path = Path(recorded)
    if path.resolve().is_relative_to(folder.resolve()):
        return path
    here = folder / path.name
    return here if here.exists() else path


def _label_map(entry) -> str | None:
    """The file of a case's entry to score: its NIfTI label map when the run wrote one among its formats (``output``
    is the first format's file, maybe a DICOM SEG or RTSTRUCT, which is rebuilt on its series), else ``output``."""

    def nifti(name) -> bool:
        return isinstance(name, str) and name.endswith((".nii.gz", ".nii")) and not name.endswith(MASKED_SUFFIX)

    if nifti(entry.output):
        return entry.output
    return next((name for name in entry.outputs or () if nifti(name)), entry.output)


def segmented_cases(folder: str | Path) -> list[CaseSpec] | None:
    """The label maps of the batch whose output folder is ``folder``, in the manifest's order: one case for each entry
    segmented (``ok``, or ``skipped``: kept from an earlier run), its file as the entry records it, or by its name in
    ``folder`` (a folder moved or copied since). ``None`` when ``folder`` is not a folder holding a medfcn manifest
    (:func:`medfcn.data.discovery.is_batch_output`).

    An entry that names no file, a file that does not exist or one outside ``folder`` (a manifest edited by hand, a
    file removed) keeps its case with ``error`` set, one line naming the file: reading it reports that case and the
    others go on. Raises :class:`UsageError` for a manifest that cannot be read (:func:`read_manifest`)."""
    folder = Path(folder)
    if not folder.is_dir() or not is_batch_output(folder):
        return None
    manifest = read_manifest(folder)
    specs = []
    for c in manifest.cases:
        if c.status not in (Status.OK, Status.SKIPPED):
            continue
        case = safe_name(str(c.case))
        output = _label_map(c)
        if not (isinstance(output, str) and output):
            specs.append(
                CaseSpec(manifest.path, case, error=f"{manifest.path}: the entry of {case} names no label map")
            )
            continue
        path = _batch_file(output, folder)
        where = f"the label map {manifest.path} records for {case}"
        error = None
        if not path.exists():
            error = f"{path}: {where} does not exist"
        elif not path.resolve().is_relative_to(folder.resolve()):
            error = f"{path}: {where} lies outside the batch's folder {folder}; not read"
        specs.append(CaseSpec(path, case, error=error))
    return specs


def read_verdicts(pred: str | Path) -> dict[str, dict]:
    """``{case: quality}`` from the ``manifest.json`` in the folder ``pred`` (or beside the file ``pred``); empty
    when there is none, it cannot be read, or its cases carry no verdict."""
    pred = Path(pred)
    path = (pred if pred.is_dir() else pred.parent) / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        cases = json.loads(path.read_text(encoding="utf-8")).get("cases", [])
        return {str(c["case"]): c["quality"] for c in cases if isinstance(c, dict) and c.get("quality")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("%s: quality verdicts not read (%s)", path, e)
        return {}
