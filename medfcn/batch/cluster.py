"""Running batch cases on a Dask cluster: each worker process loads the model once and does its cases itself.

Used by :func:`medfcn.batch.run.run_batch` with ``workers=N`` (a ``LocalCluster`` of N processes, one thread each) or
``scheduler="tcp://HOST:PORT"`` (an existing cluster). A worker reads its case, segments it with its cached
:class:`~medfcn.inference.pipeline.Segmenter` and writes the label map itself (inputs and outputs live on a
filesystem the
workers share); only the small manifest entry travels back to the client, which records it as results arrive.

Torch threads per worker process are set so that the workers of one host do not oversubscribe its cores: a
local cluster of N workers gives each ``cores // N``; on an existing cluster each worker divides its host's cores
by the tasks the cluster runs on that host at once (the ``nthreads`` of the workers there).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfcn.batch.cases import Job, Record, error_message, failed_result, process_case
from medfcn.batch.manifest import CaseResult
from medfcn.data.writer import left_by_dead_process, process_tag
from medfcn.errors import ModelError, UsageError
from medfcn.inference.settings import InferenceSettings

if TYPE_CHECKING:
    from medfcn.inference.pipeline import Segmenter
    from medfcn.model.checkpoint import Model

__all__ = ["ClusterSettings", "RUN_HERE", "run_on_cluster", "model_file", "loaded_models"]

log = logging.getLogger(__name__)

# This worker process's segmenters, keyed by (model file, its SHA-256, settings): loaded once, kept for its life.
_SEGMENTERS: dict[tuple[str, str | None, InferenceSettings], Segmenter] = {}
_SEGMENTERS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ClusterSettings:
    """Where a distributed batch runs: ``workers`` > 0 starts a local cluster of that many processes (one thread
    each); ``scheduler`` (``tcp://HOST:PORT``) joins an existing cluster; neither: the batch runs in this process.

    Raises :class:`UsageError` for both at once or a negative number of workers.
    """

    workers: int = 0
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.workers and self.scheduler:
            raise UsageError(
                "give either workers (a local cluster) or a scheduler address (an existing cluster), not both"
            )
        if self.workers < 0:
            raise UsageError(f"workers must be 0 (run here) or a positive number of processes, got {self.workers}")

    @property
    def distributed(self) -> bool:
        return bool(self.workers or self.scheduler)


RUN_HERE = ClusterSettings()  # no cluster: the batch runs in this process


@dataclass(frozen=True)
class _WorkerTask:
    """What every worker needs besides its case.

    ``sha256``: the model file's hash as the client read it; a worker that finds another file at that path
    (no shared filesystem, or the file replaced) fails its cases rather than use it.
    """

    model_path: str
    sha256: str | None
    settings: InferenceSettings


def model_file(model: Model | str | Path | None) -> str:
    """The absolute path of the model file the workers load (``None``: the bundled model).

    Raises :class:`UsageError` for a :class:`Model` that was not loaded from a file.
    """
    from medfcn.model.checkpoint import DEFAULT_MODEL_PATH, Model

    if isinstance(model, Model):
        if model.path is None:
            raise UsageError("a distributed run needs the model as a file the workers can read; save it first")
        return str(Path(model.path).absolute())
    return str(Path(DEFAULT_MODEL_PATH if model is None else model).expanduser().absolute())


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _host(address: str) -> str:
    from urllib.parse import urlparse

    return urlparse(address).hostname or address


def _threads_on_this_host() -> int:
    """This host's cores divided by the tasks its Dask workers run at once (their threads), at least 1."""
    from distributed import get_client, get_worker

    here = _host(get_worker().address)
    try:
        workers = get_client().scheduler_info(n_workers=-1).get("workers", {})
        slots = sum(int(w.get("nthreads", 1)) for address, w in workers.items() if _host(address) == here)
    except Exception as exc:  # the scheduler cannot be asked: assume this worker is alone on its host
        log.warning("cannot ask the scheduler how many workers share this host (%s)", error_message(exc))
        slots = get_worker().state.nthreads
    return max(1, _cpu_count() // max(1, slots))


def _worker_segmenter(task: _WorkerTask) -> Segmenter:
    """This worker process's segmenter for the model, loaded on its first case and kept for the rest."""
    key = (task.model_path, task.sha256, task.settings)
    with _SEGMENTERS_LOCK:
        if key not in _SEGMENTERS:
            import torch

            from medfcn.inference.pipeline import Segmenter

            n = task.settings.threads or _threads_on_this_host()
            torch.set_num_threads(n)
            segmenter = Segmenter(task.model_path, task.settings)
            if task.sha256 and segmenter.model.sha256 != task.sha256:
                raise ModelError(
                    f"{task.model_path}: not the model file the batch was started with (its SHA-256 differs "
                    "on this worker); give every worker the same file"
                )
            _SEGMENTERS[key] = segmenter
            log.info("worker %d: %s on %s, %d torch threads", os.getpid(), task.model_path, segmenter.device, n)
        return _SEGMENTERS[key]


def loaded_models() -> list[tuple[str, str | None, InferenceSettings]]:
    """The models this worker process holds loaded, as ``(model file, sha256, settings)``, sorted: each is loaded
    once per process (run it on the workers with ``client.run(loaded_models)``)."""
    with _SEGMENTERS_LOCK:
        return sorted(_SEGMENTERS, key=repr)


def _worker_case(job: Job, task: _WorkerTask) -> CaseResult:
    """Runs on a Dask worker: segment one case with the worker's cached model and write its output."""
    try:
        segmenter = _worker_segmenter(task)
    except Exception as exc:
        return failed_result(job, error_message(exc), task.settings.device)
    return process_case(segmenter, job)


SCRATCH = ".medfcn-dask-"
"""The start of the hidden scratch folder (``.medfcn-dask-HOST.PID``) a local cluster keeps in the output folder."""


def remove_stale_scratch(out_dir: Path) -> list[Path]:
    """Remove the scratch folders a local cluster's client left in ``out_dir`` when it was killed (its process of
    this host is gone; :func:`medfcn.data.writer.left_by_dead_process`); returns them. Folders of running
    processes and of other hosts are left alone."""
    removed = []
    try:
        found = [p for p in out_dir.iterdir() if p.name.startswith(SCRATCH) and p.is_dir() and not p.is_symlink()]
    except OSError:
        return []
    for folder in found:
        if left_by_dead_process(folder.name[len(SCRATCH) :]):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            log.info("removed %s, left by an interrupted run", folder)
    return removed


def _connect(where: ClusterSettings, stack: ExitStack, scratch: Path) -> tuple[Any, int | None]:
    """A Dask client (closed by ``stack``) and the torch threads per worker process (``None``: each host decides).

    A local cluster keeps its workers' scratch space (their lock and spill files) in ``scratch``, a hidden folder
    of the output folder removed when the cluster closes, instead of ``dask-scratch-space`` in the system's
    temporary folder, which it would leave behind."""
    from distributed import Client, LocalCluster

    scheduler, workers = where.scheduler, where.workers
    if scheduler is None:
        import dask

        stack.callback(shutil.rmtree, scratch, ignore_errors=True)  # runs after the cluster below has closed
        stack.enter_context(dask.config.set({"temporary-directory": str(scratch)}))
        cluster = stack.enter_context(
            LocalCluster(
                n_workers=workers,
                processes=True,
                threads_per_worker=1,
                dashboard_address=None,
                local_directory=str(scratch),
            )
        )
        client = stack.enter_context(Client(cluster))
        return client, max(1, _cpu_count() // workers)
    try:
        client = stack.enter_context(Client(scheduler, timeout="30s"))
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(f"cannot reach the Dask scheduler at {scheduler} ({error_message(exc)})") from None
    if not client.scheduler_info(n_workers=-1).get("workers"):
        log.warning("the Dask cluster at %s has no workers yet; cases wait until one joins", scheduler)
    return client, None


def run_on_cluster(
    jobs: list[Job],
    record: Record,
    current: Callable[[str], None],
    *,
    model_path: str,
    sha256: str | None,
    settings: InferenceSettings,
    where: ClusterSettings,
) -> None:
    """Segment ``jobs`` on a local cluster of ``where.workers`` processes or on the cluster at ``where.scheduler``.

    ``settings.threads`` (torch threads per worker process), when not set, is each host's cores shared by its
    workers.

    ``record(index, entry)`` is called on the client as each case finishes (in any order); a case whose worker
    died is recorded ``failed``. ``current(case)`` names the case last finished (for a progress bar).

    Raises:
        UsageError: the scheduler cannot be reached.
    """
    from distributed import as_completed

    if not jobs:
        return
    with ExitStack() as stack:
        scratch = (jobs[0].out_dir or jobs[0].output.parent).absolute() / f"{SCRATCH}{process_tag()}"
        client, threads = _connect(where, stack, scratch)
        if settings.threads is None:
            settings = replace(settings, threads=threads)
        task = _WorkerTask(model_path, sha256, settings)
        futures = {}
        for job in jobs:
            # Absolute paths: a worker's working directory is not ours.
            spec = replace(job.spec, path=job.spec.path.absolute(), files=tuple(f.absolute() for f in job.spec.files))
            out_dir = None if job.out_dir is None else job.out_dir.absolute()
            remote = replace(job, spec=spec, output=job.output.absolute(), out_dir=out_dir)
            key = f"medfcn-case-{job.index}-{os.getpid()}-{time.time_ns()}"
            futures[client.submit(_worker_case, remote, task, pure=False, key=key)] = job
        try:
            for future in as_completed(futures):
                job = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # the worker died (KilledWorker) or the task could not run
                    result = failed_result(job, error_message(exc), settings.device)
                current(job.spec.case)
                output = None if result.output is None else str(job.output)
                record(job.index, replace(result, input=str(job.spec.path), output=output))
        finally:  # interrupted: drop the cases not yet started (those running finish their atomic writes)
            unfinished = [f for f in futures if not f.done()]
            if unfinished:
                client.cancel(unfinished)
