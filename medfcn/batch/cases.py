"""One case of a batch, stage by stage: read, segment, write, and the manifest entry that records it.

Shared by the two executors of :func:`medfcn.batch.run.run_batch`: the local one (:mod:`medfcn.batch.run`, which
runs the stages in background threads) and the Dask one (:mod:`medfcn.batch.cluster`, where each worker runs
:func:`process_case`). A broken case never raises here: its first error is one line in its entry (:func:`error_message`)
and the batch goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medfcn.batch.manifest import CaseResult, Status
from medfcn.batch.outputs import FLAT, PLAIN, Layout, OutputFormat, OutputOptions, check_case, write_outputs
from medfcn.data.discovery import CaseSpec
from medfcn.data.writer import file_sha256
from medfcn.errors import MedfcnError

if TYPE_CHECKING:
    from medfcn.data.scan import Scan
    from medfcn.inference.pipeline import Segmenter
    from medfcn.model.checkpoint import Model

__all__ = [
    "Job",
    "Record",
    "CaseState",
    "input_stamp",
    "is_file",
    "reason_to_redo",
    "error_message",
    "read_case",
    "segment_case",
    "write_case",
    "case_result",
    "skipped_result",
    "failed_result",
    "process_case",
]

log = logging.getLogger(__name__)

Record = Callable[[int, CaseResult], None]  # record(index in discovery order, entry), called as cases finish


@dataclass(frozen=True)
class Job:
    """A case to segment: its position in discovery order, what to read and where its label map goes (``output``,
    the first of :attr:`files`; ``out_dir``, the batch's output folder, is ``output``'s folder unless given)."""

    index: int
    spec: CaseSpec
    output: Path
    formats: tuple[OutputFormat, ...] = (OutputFormat.NIFTI,)
    options: OutputOptions = PLAIN
    layout: Layout = FLAT
    out_dir: Path | None = None

    @property
    def files(self) -> dict[str, Path]:
        """Every file of the case, by format or kind (``output`` is the first); see :mod:`medfcn.batch.outputs`."""
        folder = self.output.parent if self.out_dir is None else self.out_dir
        return self.layout.files(folder, self.spec, self.formats, self.options)


@dataclass
class CaseState:
    """What one case produced so far: the scan, its labels, the first error, seconds per stage, the output's hash."""

    scan: Scan | None = None
    labels: np.ndarray | None = None
    error: str | None = None
    timing: dict[str, float] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256 of each file written
    warnings: list[str] = field(default_factory=list)  # what the segmentation noticed (an empty label map)
    stamp: str | None = None  # input_stamp of the input files, taken before they were read
    quality: dict | None = None  # the verdict's {"review", "score", "reasons"}
    withheld: bool = False  # flagged and, as asked (skip_flagged), not written
    statistics: dict[str, dict] | None = None  # per label (--statistics), see medfcn.data.statistics


def input_stamp(spec: CaseSpec) -> str:
    """A short fingerprint of a case's input files: their names, sizes, modification and change times (a file
    replaced by another of the same size and modification time, ``cp -p`` or ``mv``, has a new change time)."""
    import hashlib

    path = Path(spec.path)
    files = list(spec.files) or (sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path])
    h = hashlib.sha256()
    for f in files:
        try:
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            h.update(f"{f.name}\0missing\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def is_file(path: Path) -> bool:
    """``path.is_file()``, false (not an error) for a name the system refuses, e.g. longer than 255 bytes."""
    try:
        return path.is_file()
    except OSError:
        return False


def reason_to_redo(job: Job, earlier: CaseResult | None, model_sha256: str | None) -> str | None:
    """Why ``job`` must be segmented again, or ``None`` when its outputs are finished and can be skipped.

    It is kept only when ``earlier`` (the previous manifest's entry of this case) records it as made from the same
    input by the same model, and the file still has the SHA-256 recorded when it was written and verified.
    """
    if job.spec.error:
        return "it cannot be read"
    if not is_file(job.output):
        return "no output yet"
    if earlier is None or earlier.status == Status.FAILED or not earlier.sha256:
        return "the output is not recorded as finished in the manifest"
    if earlier.input != str(job.spec.path) or earlier.series_uid != job.spec.series_uid:
        return f"the output was made from another input ({earlier.input})"
    if not model_sha256 or earlier.model_sha256 != model_sha256:
        return "the output was made by another model"
    if earlier.input_stamp != input_stamp(job.spec):
        return "the input changed since the output was made"
    if (earlier.border_mm or 0.0) != job.options.border_mm:
        return f"the output was made with another --border ({earlier.border_mm or 0.0:g} mm)"
    if job.options.statistics and earlier.statistics is None:
        return "its statistics were not computed when it was made"
    recorded = earlier.output_sha256 or {job.output.name: earlier.sha256}
    for path in job.files.values():
        if path.name not in recorded:
            return f"{path.name} was not asked for when the case was made"
        try:
            if file_sha256(path) != recorded[path.name]:
                return f"{path.name} changed since it was written (short, damaged, replaced or missing)"
        except OSError as e:
            return f"{path.name} cannot be read ({e.strerror or e})"
    return None


def error_message(exc: BaseException) -> str:
    """A one-line error for the manifest: a MedfcnError's own message, else the type and its first line."""
    if isinstance(exc, MedfcnError):
        return str(exc)
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


# -- the three stages of a case --------------------------------------------------------------------------------
def read_case(job: Job) -> CaseState:
    """Read the scan of ``job`` (and check it suits the formats asked for); an error is kept in the step."""
    step = CaseState()
    if job.spec.error:  # a series found broken: no time spent reading
        step.error = job.spec.error
        return step
    start = time.perf_counter()
    # Stamped before reading: an input replaced while (or after) it is read no longer matches the stamp recorded,
    # so a later run redoes the case instead of keeping labels of the scan that was replaced.
    step.stamp = input_stamp(job.spec)
    try:
        step.scan = job.spec.read()
        check_case(step.scan, job.formats)  # a DICOM format for a case that is not DICOM: fail before segmenting
    except Exception as exc:  # a broken case never stops the batch
        step.error = error_message(exc)
    step.timing["read"] = time.perf_counter() - start
    return step


def segment_case(segmenter: Segmenter, step: CaseState, options: OutputOptions = PLAIN) -> CaseState:
    """Segment the scan of a step that has no error yet, judge the result (:mod:`medfcn.inference.verdict`), move the
    border and compute the statistics ``options`` ask for; an error is kept in the step. With
    ``options.skip_flagged``, a case flagged for review keeps no labels (nothing is written)."""
    if step.error is None and step.scan is not None:
        start = time.perf_counter()
        try:
            # the writers need only the grid, unless the statistics or the masked image need the voxels
            found = segmenter.segment_and_check(step.scan, release_voxels=not options.needs_voxels)
            step.labels, step.quality = found.labels, found.verdict.to_dict()
            _finish_labels(step, segmenter, options)
        except Exception as exc:
            step.error = error_message(exc)
        else:
            where = step.scan.source or step.scan.case
            if not step.labels.any():
                names = ", ".join(n for n, i in segmenter.labels.items() if i > 0)
                text = (
                    f"every voxel is background (no {names} found): the label map is empty; check that the scan "
                    f"is what the model was trained on ({segmenter.model.card.modality or 'see medfcn info'})"
                )
                log.warning("%s: %s", where, text)
                step.warnings.append(text)
            if found.verdict.review:
                log.warning(
                    "%s: flagged for review (score %.2f): %s",
                    where,
                    found.verdict.score,
                    "; ".join(found.verdict.reasons),
                )
                if options.skip_flagged:
                    step.labels, step.withheld = None, True
                    step.warnings.append("flagged for review: no label map written (--skip-flagged)")
        step.timing["segment"] = time.perf_counter() - start
    return step


def _finish_labels(step: CaseState, segmenter: Segmenter, options: OutputOptions) -> None:
    """``--border`` on the step's labels, then ``--statistics`` from them and the scan's voxels."""
    scan = step.scan
    if options.border_mm:
        from medfcn.inference.border import move_border

        step.labels = move_border(step.labels, scan.spacing, options.border_mm)
    if options.statistics:
        from medfcn.data.statistics import label_statistics

        step.statistics = label_statistics(step.labels, scan.array, scan.spacing, segmenter.labels)
    if options.needs_voxels and not options.masked_image:  # done with them: free them before the write
        scan.array = np.broadcast_to(np.zeros((), dtype=scan.array.dtype), scan.shape)


def write_case(job: Job, step: CaseState, model: Model | None = None) -> CaseState:
    """Write every output file of a segmented step (and the layout's texts beside them) as one unit and record
    their hashes; the labels and the scan's voxels are dropped after."""
    if step.error is None and step.labels is not None and step.scan is not None:
        start = time.perf_counter()
        try:
            files = job.files
            texts = job.layout.texts(files, job.spec, model, step.quality)
            # each read back and verified before any is renamed into place
            write_outputs(step.labels, step.scan, files, model, texts=texts, warnings=step.warnings)
            step.hashes = {path.name: file_sha256(path) for path in files.values()}
        except Exception as exc:
            step.error = error_message(exc)
        step.timing["write"] = time.perf_counter() - start
        step.labels = None
        step.scan.array = np.broadcast_to(np.zeros((), dtype=step.scan.array.dtype), step.scan.shape)
    return step


def case_result(
    job: Job,
    step: CaseState,
    device: str,
    model_sha256: str | None = None,
    precision: str | None = None,
    backend: str | None = None,
) -> CaseResult:
    """The manifest entry of a processed case. A failed case's outputs from an earlier run are kept, not recorded.
    ``precision``: the network's arithmetic (:attr:`medfcn.inference.engine.SliceEngine.precision`); ``backend``:
    what ran it (:attr:`~medfcn.inference.engine.SliceEngine.backend`)."""
    scan = step.scan
    done = step.error is None and not step.withheld
    kept = [p.name for p in job.files.values() if is_file(p)] if not done else []
    if kept:  # the outputs are one unit (outputs.write_outputs): a failed or withheld attempt changed none of them
        why = "was flagged and not written" if step.error is None else "failed"
        note = f"this run's attempt {why}; {', '.join(kept)} from an earlier run left unchanged"
        log.warning("%s: %s", job.spec.case, note)
        step.warnings.append(note)
    warnings = list(dict.fromkeys([*job.spec.warnings, *(scan.warnings if scan is not None else []), *step.warnings]))
    if step.error is not None:
        status = Status.FAILED
    else:
        status = Status.FLAGGED if step.withheld else Status.OK
    return CaseResult(
        input=str(job.spec.path),
        case=job.spec.case,
        series_uid=job.spec.series_uid or (scan.series_uid if scan is not None else None),
        output=str(job.output) if done else None,
        status=status,
        error=step.error,
        seconds=round(sum(step.timing.values()), 3),
        shape=list(scan.shape) if scan is not None else None,
        spacing=[round(s, 6) for s in scan.spacing] if scan is not None else None,
        device=device,
        precision=precision if step.error is None else None,
        backend=backend if step.error is None else None,
        timing={k: round(v, 3) for k, v in step.timing.items()},
        warnings=warnings,
        sha256=step.hashes.get(job.output.name) if done else None,
        output_sha256=dict(step.hashes) if done else {},
        model_sha256=model_sha256 if done else None,
        input_stamp=step.stamp if done else None,
        outputs=[str(p) for p in job.files.values()] if done else None,
        quality=step.quality if step.error is None else None,
        border_mm=job.options.border_mm if done and job.options.border_mm else None,
        statistics=step.statistics if done else None,
    )


def skipped_result(earlier: CaseResult) -> CaseResult:
    """The manifest entry of a case kept from an earlier run: its earlier entry, marked ``skipped``."""
    return CaseResult.from_dict({**earlier.to_dict(), "status": Status.SKIPPED, "seconds": None, "timing": {}})


def failed_result(job: Job, error: str, device: str) -> CaseResult:
    """The manifest entry of a case that failed before it was read (e.g. its worker died)."""
    return case_result(job, CaseState(error=error), device)


def process_case(segmenter: Segmenter, job: Job) -> CaseResult:
    """Read, segment and write one case in turn; never raises for a broken case (it is reported ``failed``)."""
    step = write_case(job, segment_case(segmenter, read_case(job), job.options), segmenter.model)
    engine = segmenter.engine
    return case_result(job, step, str(segmenter.device), segmenter.model.sha256, engine.precision, engine.backend)
