"""Batch segmentation of many scans: resumable, fault-isolated, and optionally spread over a Dask cluster.

:func:`run_batch` finds the cases in its inputs (:func:`medfcn.data.discovery.find_cases`), segments each with one
model loaded once, writes ``OUT/<case>.nii.gz`` atomically, and keeps ``OUT/manifest.json`` up to date.

- **Local** (``workers=0``, no scheduler): the next case is read in a background thread while the current one is
  segmented, and each label map is written in another thread while the next case is segmented, so reading and
  writing hide behind inference.
- **Distributed** (``workers=N`` starts a local cluster of N worker processes; ``scheduler="tcp://HOST:PORT"``
  joins an existing Dask cluster; see :mod:`medfcn.batch.cluster`): each worker process loads the model once and reads,
  segments and writes its cases itself (inputs and ``OUT`` must be on a filesystem the workers share); the client
  records the manifest as results arrive. Outputs and manifest are the same as a local run's.
- **Resume**: a case is ``skipped`` only when the manifest of an earlier run records its output as made from the
  same input (same path, series, file sizes and modification times) by the same model (SHA-256 of the model
  file), and the output file still has the SHA-256 recorded when it was written; any other output is made again
  (``overwrite=True`` redoes every case). Every label map is read back whole and compared with what was
  written before it is renamed into place, so a full disk or a killed process never leaves a short file under
  a final name; a batch killed at any moment is finished by running the same command again.
- **Outputs never replace inputs**: ``out_dir`` equal to an input folder, or an input inside ``out_dir``, is
  refused before any work (exit status 2); an ``out_dir`` inside an input folder is left out of the search, as is
  any folder holding a medfcn manifest.
- **Quality**: every segmented case's entry carries a verdict (``quality``: review, score, reasons;
  :mod:`medfcn.inference.verdict`); ``options.skip_flagged`` writes no label map for a flagged case.
- **Fault isolation**: a case that cannot be found, read, segmented or written is ``failed`` with a one-line
  error in the manifest and the batch goes on; an output from an earlier run is kept when a redo fails.

The stages of one case and its manifest entry live in :mod:`medfcn.batch.cases`, which both executors call.

Example (a folder of two scans, one already done)::

    manifest = run_batch(["scans/"], "out/", settings=InferenceSettings(device="cpu"))
    manifest.exit_code, [c.status for c in manifest.cases]
    # (0, [<Status.OK: 'ok'>, <Status.SKIPPED: 'skipped'>])
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medfcn.batch.cases import (
    CaseState,
    Job,
    Record,
    case_result,
    error_message,
    is_file,
    read_case,
    reason_to_redo,
    segment_case,
    skipped_result,
    write_case,
)
from medfcn.batch.cluster import RUN_HERE, ClusterSettings, remove_stale_scratch
from medfcn.batch.manifest import MANIFEST_NAME, CaseResult, Manifest, Status, now_iso
from medfcn.batch.outputs import FLAT, PLAIN, Layout, OutputOptions, parse_formats
from medfcn.data import lock
from medfcn.data.discovery import CaseSpec, find_cases, input_key, resolve_input, safe_name
from medfcn.data.writer import check_writable, remove_stale_partials
from medfcn.errors import OutputError
from medfcn.inference.settings import DEFAULT_SETTINGS, InferenceSettings

if TYPE_CHECKING:
    from medfcn.inference.pipeline import Segmenter
    from medfcn.model.checkpoint import Model

__all__ = ["run_batch"]

log = logging.getLogger(__name__)


def _check_not_an_input(out_dir: Path, inputs: list[Path]) -> None:
    """Refuse an output folder that is an input folder or holds an input: its label maps could replace scans."""
    out = resolve_input(out_dir)
    for item in inputs:
        src = resolve_input(item)
        if src == out:
            raise OutputError(
                f"{out_dir}: the output folder is the input folder {item}; label maps would be written among the "
                "scans (and could replace them): choose another output folder"
            )
        if out in src.parents:
            raise OutputError(
                f"{out_dir}: the output folder holds the input {item}; a label map could replace it: "
                "choose another output folder"
            )


LOCK_NAME = ".medfcn.lock"
_LOCKS: dict[Path, object] = {}  # the output folders this process holds locked, with their open lock files


def _lock(out_dir: Path) -> None:
    """Hold ``OUT/.medfcn.lock`` (:mod:`medfcn.data.lock`) until :func:`_unlock`: a second run into the same folder
    is refused, so two runs never write one manifest (the last to finish would drop the other's cases). Raises
    OutputError."""
    busy = f"{out_dir}: another medfcn segment is writing into this folder ({{holder}}); wait for it to finish or "
    _LOCKS[out_dir.resolve()] = lock.acquire(out_dir / LOCK_NAME, busy + "choose another output folder")


def _unlock(out_dir: Path) -> None:
    """Release the lock and remove its file."""
    handle = _LOCKS.pop(out_dir.resolve(), None)
    if handle is not None:
        lock.release(out_dir / LOCK_NAME, handle)


def _earlier_results(out_dir: Path) -> dict[str, CaseResult]:
    """The entries of the manifest an earlier run left in ``out_dir``, by case name (empty if none or damaged)."""
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        return {c.case: c for c in Manifest.read(path).cases}
    except Exception as e:  # a damaged manifest: its cases are segmented again
        log.warning("%s: cannot be read (%s); every case is segmented again", path, error_message(e))
        return {}


# -- local: one process, reading and writing in background threads ---------------------------------------------
def _run_local(jobs: list[Job], segmenter: Segmenter, record: Record, current: Callable[[str], None]) -> None:
    """Segment ``jobs`` in order; case i+1 is read and case i-1 written while case i is segmented."""
    device, sha = str(segmenter.device), segmenter.model.sha256
    engine = segmenter.engine
    entry = functools.partial(
        case_result, device=device, model_sha256=sha, precision=engine.precision, backend=engine.backend
    )
    with (
        ThreadPoolExecutor(1, thread_name_prefix="medfcn-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="medfcn-write") as writer,
    ):
        reads = [reader.submit(read_case, jobs[0])] if jobs else []
        writing: tuple[Job, Future[CaseState]] | None = None
        for i, job in enumerate(jobs):
            step = reads.pop().result()
            if i + 1 < len(jobs):
                reads.append(reader.submit(read_case, jobs[i + 1]))
            current(job.spec.case)
            step = segment_case(segmenter, step, job.options)
            if writing is not None:  # long finished in the background; wait so at most one write is pending
                record(writing[0].index, entry(writing[0], writing[1].result()))
                writing = None
            if step.error is None and not step.withheld:
                writing = (job, writer.submit(write_case, job, step, segmenter.model))
            else:
                record(job.index, entry(job, step))
        if writing is not None:
            record(writing[0].index, entry(writing[0], writing[1].result()))


# -- the entry point ----------------------------------------------------------------------------------------------
def _plan(inputs: list[Path], out_dir: Path, formats: tuple, options: OutputOptions, layout: Layout) -> list[Job]:
    """The jobs of a batch, once the output folder is known to be safe and writable and is locked (see
    :func:`run_batch`). Cases an earlier run into ``out_dir`` named keep their names (see
    :func:`medfcn.data.discovery.find_cases`)."""
    remove_stale_partials(out_dir)
    remove_stale_scratch(out_dir)
    keep = {input_key(r.input, r.series_uid): name for name, r in _earlier_results(out_dir).items() if r.input}
    jobs, claimed = [], {}
    for i, spec in enumerate(find_cases(inputs, exclude=[out_dir], keep=keep)):
        spec, files = _check_names(spec, out_dir, formats, options, layout)
        taken = [(path, claimed[path]) for path in files.values() if path in claimed]
        if taken and not spec.error:  # e.g. case 'x.masked' and case x's masked image x.masked.nii.gz
            path, other = taken[0]
            error = f"{spec.path}: its output {path.name} is also an output of case {other}; rename the input"
            spec = dataclasses.replace(spec, error=error)
        claimed.update({path: spec.case for path in files.values() if not spec.error})
        for folder in {p.parent for p in files.values()} - {out_dir}:  # a layout's sub-folders (BIDS)
            remove_stale_partials(folder)
        jobs.append(Job(i, spec, next(iter(files.values())), formats, options, layout, out_dir))
    return jobs


def _check_names(
    spec: CaseSpec, out_dir: Path, formats: tuple, options: OutputOptions, layout: Layout
) -> tuple[CaseSpec, dict[str, Path]]:
    """``spec`` and its output files (``layout``'s), ``spec`` failed (its error set) when an output of its case would
    not lie inside ``out_dir`` (a case name with a separator or ``..``, as a hand-edited manifest may hold:
    :func:`medfcn.batch.outputs.output_files`; any layout's path that resolves elsewhere) or its name is longer than
    a file name may be. A failed case keeps a harmless name (separators replaced by ``_``) in the manifest; nothing
    is written for it."""
    try:
        files = layout.files(out_dir, spec, formats, options)
        root = out_dir.resolve()
        for path in files.values():
            if not path.resolve().is_relative_to(root) or path.resolve() == root:
                raise OutputError(f"{path}: not a file inside the output folder {out_dir}; nothing written")
    except OutputError as e:
        harmless = safe_name(str(spec.case).replace(os.sep, "_")).strip(".") or "_"
        spec = dataclasses.replace(spec, case=harmless, error=spec.error or str(e))
        return spec, layout.files(out_dir, spec, formats, options)
    for path in files.values():
        size = len(path.name.encode("utf-8", "surrogateescape"))
        if size > 255:
            error = (
                f"{spec.path}: file name too long: its output {path.name[:40]}...{path.name[-20:]} would be {size} "
                "bytes, more than the 255 a file name may have; rename the input"
            )
            return dataclasses.replace(spec, error=spec.error or error), files
    return spec, files


def _resume(
    jobs: list[Job], earlier: dict[str, CaseResult], model_sha256: str | None, overwrite: bool
) -> tuple[dict[int, CaseResult], list[Job]]:
    """``({index: skipped entry}, jobs to run)``: a case is skipped only when its outputs are complete and its own."""
    results: dict[int, CaseResult] = {}
    todo = []
    for job in jobs:
        why = None if overwrite else reason_to_redo(job, earlier.get(job.spec.case), model_sha256)
        if why is None and not overwrite:
            results[job.index] = skipped_result(earlier[job.spec.case])
        else:
            if is_file(job.output) and not overwrite:
                log.info("%s: segmented again: %s", job.output, why)
            todo.append(job)
    return results, todo


class _Recorder:
    """``record(index, entry)``: a finished case goes into the manifest (rewritten at once) and the progress bar."""

    def __init__(self, manifest: Manifest, results: dict[int, CaseResult], bar, distributed: bool) -> None:
        self.manifest, self.results, self.bar, self.distributed = manifest, results, bar, distributed
        self.device = manifest.device

    def __call__(self, index: int, result: CaseResult) -> None:
        if result.status == Status.FAILED:
            log.warning("%s failed: %s", result.case, result.error)
        self.results[index] = result
        cases = self.manifest.cases = [self.results[i] for i in sorted(self.results)]
        if self.distributed:  # the devices the workers used
            devices = sorted({c.device for c in cases if c.device and c.status == Status.OK})
            self.manifest.device = ", ".join(devices) or self.device
        self.manifest.write()
        self.bar.update(1)

    def current(self, case: str) -> None:
        """Name the case last finished beside the bar."""
        self.bar.set_postfix_str(case, refresh=True)


def run_batch(
    inputs: Sequence[str | Path] | str | Path,
    out_dir: str | Path,
    *,
    model: Model | str | Path | None = None,
    settings: InferenceSettings = DEFAULT_SETTINGS,
    cluster: ClusterSettings = RUN_HERE,
    overwrite: bool = False,
    progress: bool = True,
    formats: str | Sequence[str] = ("nifti",),
    options: OutputOptions = PLAIN,
    layout: Layout = FLAT,
) -> Manifest:
    """Segment every case in ``inputs`` into ``out_dir/<case>.nii.gz`` and record ``out_dir/manifest.json``.

    Args:
        inputs: files and folders in any mix (see :func:`medfcn.data.discovery.find_cases`).
        out_dir: created if missing.
        model: a :class:`medfcn.model.checkpoint.Model`, a model file, or ``None`` for the bundled model.
        settings: device, precision, test-time augmentation, batch size, threads per worker
            (:class:`medfcn.inference.settings.InferenceSettings`; on each worker for a distributed run).
        cluster: ``workers=N`` starts a local Dask cluster of N worker processes, ``scheduler`` joins an existing
            one (:class:`medfcn.batch.cluster.ClusterSettings`); the default runs here.
        overwrite: segment cases whose output exists (default: skip them, which resumes an interrupted batch).
        progress: show a progress bar on stderr.
        formats: what to write per case: ``nifti``, ``dicom-seg``, ``rtstruct`` (see :mod:`medfcn.batch.outputs`).
        options: a masked image, a border moved by some mm, statistics (``OUT/statistics.csv``) for every case
            (:class:`medfcn.batch.outputs.OutputOptions`).
        layout: where each file of a case goes (default ``OUT/<case><suffix>``; :mod:`medfcn.batch.bids` gives a
            BIDS derivatives layout).

    Returns:
        The :class:`Manifest`; ``manifest.exit_code`` is 1 if any case failed.

    Raises:
        OutputError: ``out_dir`` cannot be created or written (checked before any input is looked at).
        NoScansError: an input does not exist or holds no scan.
        ModelError: the model file cannot be loaded.
        UsageError: the scheduler cannot be reached.
    """
    out_dir = Path(out_dir)
    formats = parse_formats(formats)
    inputs = [Path(p) for p in ([inputs] if isinstance(inputs, str | Path) else inputs)]
    _check_not_an_input(out_dir, inputs)
    check_writable(out_dir)
    _lock(out_dir)  # released below; a run refused here leaves the lock of the run that holds it alone
    try:
        jobs = _plan(inputs, out_dir, formats, options, layout)
        runner = _Runner.start(model, settings, cluster)
        manifest, results, todo = _start_manifest(jobs, out_dir, runner, overwrite)
        with _progress_bar(len(jobs), len(results), progress) as bar:
            runner.run(todo, _Recorder(manifest, results, bar, runner.segmenter is None))
        manifest.finished = now_iso()
        manifest.write()
        if options.statistics:
            _write_statistics(manifest, out_dir)
    finally:
        _unlock(out_dir)
    return manifest


def _write_statistics(manifest: Manifest, out_dir: Path) -> None:
    """``OUT/statistics.csv`` from the manifest's cases that have statistics (made now or kept from before)."""
    from medfcn.data.statistics import STATISTICS_NAME, write_statistics_csv

    done = [(c.case, c.statistics) for c in manifest.cases if c.statistics and c.status != Status.FAILED]
    write_statistics_csv(out_dir / STATISTICS_NAME, done)


@dataclass
class _Runner:
    """Where the cases run: here (``segmenter``, the model loaded once) or on a Dask cluster (``model_path``)."""

    info: dict  # the model's summary for the manifest
    device: str
    settings: InferenceSettings
    cluster: ClusterSettings
    segmenter: Segmenter | None = None
    model_path: str = ""

    @classmethod
    def start(cls, model, settings: InferenceSettings, cluster: ClusterSettings) -> _Runner:
        """Load the model here, or (distributed) only its card: each worker loads the model itself."""
        if cluster.distributed:
            from medfcn.batch.cluster import model_file
            from medfcn.model.checkpoint import Model, load_model

            path = model_file(model)
            info = (model if isinstance(model, Model) else load_model(path)).summary()
            return cls(info, settings.device, settings, cluster, model_path=path)
        from medfcn.inference.pipeline import Segmenter

        segmenter = Segmenter(model, settings)
        return cls(segmenter.model.summary(), str(segmenter.device), settings, cluster, segmenter=segmenter)

    @property
    def precision(self) -> str:
        if self.segmenter is not None:
            return self.segmenter.engine.precision
        return "float32" if self.settings.amp is False else "auto per worker"

    @property
    def backend(self) -> str:
        if self.segmenter is not None:
            return self.segmenter.engine.backend
        return self.settings.backend if self.settings.backend != "auto" else "auto per worker"

    def run(self, todo: list[Job], record: _Recorder) -> None:
        if self.segmenter is not None:
            _run_local(todo, self.segmenter, record, record.current)
        elif todo:
            from medfcn.batch.cluster import run_on_cluster

            run_on_cluster(
                todo,
                record,
                record.current,
                model_path=self.model_path,
                sha256=self.info.get("sha256"),
                settings=self.settings,
                where=self.cluster,
            )


def _start_manifest(
    jobs: list[Job], out_dir: Path, runner: _Runner, overwrite: bool
) -> tuple[Manifest, dict[int, CaseResult], list[Job]]:
    """The manifest with the cases kept from an earlier run already in it (written), those entries, and the jobs
    left to run."""
    earlier = {} if overwrite else _earlier_results(out_dir)
    manifest = Manifest(
        path=out_dir / MANIFEST_NAME,
        model=runner.info,
        device=runner.device,
        precision=runner.precision,
        backend=runner.backend,
        total=len(jobs),
    )
    results, todo = _resume(jobs, earlier, runner.info.get("sha256"), overwrite)
    manifest.cases = [results[i] for i in sorted(results)]
    manifest.write()
    log.info("%d cases: %d to segment, %d already done", len(jobs), len(todo), len(results))
    return manifest, results, todo


@contextmanager
def _progress_bar(total: int, done: int, progress: bool) -> Iterator:
    """A tqdm bar on stderr (disabled without ``progress``) that log records print above."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(total=total, initial=done, unit="case", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    with bar, logging_redirect_tqdm() if progress else nullcontext():
        yield bar
