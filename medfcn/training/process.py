"""Training in a child process, for an interactive caller (the napari Train dock): :func:`iter_train_process` runs
:func:`~medfcn.training.train.iter_train` in a spawned process, and :func:`train_correction` is the dock's one call
(write the corrected case, then train on it there); :func:`train_corrected_cases` trains on a list of them (the
Review queue's).

A thread that trains in the viewer's own process holds the GIL in stretches (imports, C code) and stalled the
viewer's event loop for 0.5-2.5 s on a busy 2-core machine; a process costs a few seconds to start (torch and MONAI
imported again) and stalls nothing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING

from medfcn.errors import MedfcnError

if TYPE_CHECKING:
    import numpy as np

    from medfcn.data.scan import Scan
    from medfcn.training.corrections import StartModel
    from medfcn.training.options import TrainConfig
    from medfcn.training.progress import TrainProgress, TrainSummary

__all__ = ["iter_train_process", "train_correction", "train_corrected_cases", "ThreadedRun"]


def _train_child(config: TrainConfig, queue, cancel, compare: bool = False, preview: bool = False) -> None:
    """The child process of :func:`iter_train_process`: the run's progress, then, when a model was written and
    ``compare``, ("change", :class:`~medfcn.training.compare.ScanChange` of the tuned model against its start
    model on the run's first image), when ``preview``, ("change", :class:`~medfcn.training.compare.Preview`: the
    tuned model's labels of that image), then ("done", summary) or ("error", exception) on ``queue``. It stops as
    if cancelled when its parent is gone (a viewer that died cannot say so)."""
    import multiprocessing
    import os

    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))  # a core stays free for the viewer
    from medfcn.training.train import iter_train

    parent = multiprocessing.parent_process()

    def stopped() -> bool:
        return cancel.is_set() or (parent is not None and not parent.is_alive())

    try:
        run = iter_train(config, cancel=stopped)
        while True:
            try:
                queue.put(("progress", next(run)))
            except StopIteration as stop:
                summary = stop.value
                if compare and config.init and summary.written and not stopped():
                    from medfcn.training.compare import scan_change

                    queue.put(("change", scan_change(config.images, config.init, summary.output)))
                if preview and summary.written and not stopped():
                    from medfcn.training.compare import scan_preview

                    queue.put(("change", scan_preview(config.images, summary.output)))
                queue.put(("done", summary))
                return
    except MedfcnError as exc:
        queue.put(("error", type(exc)(str(exc))))
    except BaseException as exc:  # anything else, said in one line in the parent
        queue.put(("error", MedfcnError(f"training failed: {type(exc).__name__}: {exc}")))


def iter_train_process(
    config: TrainConfig,
    cancel: Callable[[], bool] | None = None,
    *,
    started: Callable[[object], None] | None = None,
    compare: bool = False,
    preview: bool = False,
) -> Generator[TrainProgress, None, TrainSummary]:
    """:func:`~medfcn.training.train.iter_train` in a child process (spawned), as a generator of its
    :class:`~medfcn.training.progress.TrainProgress` that returns its
    :class:`~medfcn.training.progress.TrainSummary`; ``cancel()`` is polled every 0.1 s and passed on;
    ``started(process)`` is called once the child runs (its owner may end it: the generator then raises).
    With ``compare``, a :class:`~medfcn.training.compare.ScanChange` is yielded after the last progress (the
    tuned model against its start model on the whole scan); with ``preview``, a
    :class:`~medfcn.training.compare.Preview` (the tuned model's labels of the scan). Raises what the run raised
    (:class:`MedfcnError`),
    or MedfcnError if the process dies."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    messages, stop = context.Queue(), context.Event()
    process = context.Process(target=_train_child, args=(config, messages, stop, compare, preview), daemon=True)
    process.start()
    if started is not None:
        started(process)
    try:
        while True:
            if cancel is not None and cancel():
                stop.set()
            try:
                kind, value = messages.get(timeout=0.1)
            except queue.Empty:
                if not process.is_alive():
                    status = process.exitcode
                    raise MedfcnError(f"the training process ended unexpectedly (exit status {status})") from None
                continue
            if kind in ("progress", "change"):
                yield value
            elif kind == "done":
                return value
            else:
                raise value
    finally:  # the child has sent its last message (or the caller left): it ends by itself, joined aside
        stop.set()
        threading.Thread(target=_reap, args=(process,), daemon=True).start()


def _reap(process, timeout: float = 60.0) -> None:
    """Wait for a child process that was told to stop; end it if it does not."""
    process.join(timeout)
    if process.is_alive():
        process.terminate()
        process.join()


def train_correction(
    folder: Path,
    scan: Scan,
    label: np.ndarray,
    start: StartModel,
    minutes: float,
    cancel: Callable[[], bool],
    *,
    name: str = "",
    started: Callable[[object], None] | None = None,
    preview: bool = False,
) -> Generator[TrainProgress, None, tuple[TrainConfig, TrainSummary]]:
    """The Train dock's run: write ``scan`` and its partial ``label`` under ``folder``, readable by the user alone
    (:func:`~medfcn.training.corrections.prepare_correction_run`; the new model named ``name``), then train on them
    for ``minutes`` in a child process (``started`` as in :func:`iter_train_process`), the model written to
    ``folder``/model.safetensors; yields the progress and, for a fine-tuned model, its
    :class:`~medfcn.training.compare.ScanChange` against the start model (with ``preview``, a live round: the
    tuned model's :class:`~medfcn.training.compare.Preview` of the scan instead); returns (config, summary). The
    copies of
    the scan and label are removed when the run ends, however it ends. Raises :class:`MedfcnError`."""
    import shutil

    from medfcn.training.corrections import prepare_correction_run

    try:
        config = prepare_correction_run(
            folder, scan, label, start, minutes=minutes, output=folder / "model.safetensors", name=name
        )
        summary = yield from iter_train_process(config, cancel, started=started, compare=not preview, preview=preview)
    finally:  # a patient's scan stays on disk no longer than its run
        for kind in ("images", "labels"):
            shutil.rmtree(folder / kind, ignore_errors=True)
    return config, summary


def train_corrected_cases(
    config: TrainConfig, cancel: Callable[[], bool], *, started: Callable[[object], None] | None = None
) -> Generator[TrainProgress, None, tuple[TrainConfig, TrainSummary]]:
    """One fine-tuning run on corrected cases (``config`` from
    :func:`~medfcn.training.corrections.corrected_cases_run`: the files read where they lie, nothing copied) in a
    child process; yields the progress, returns (config, summary) as :func:`train_correction`. Raises
    :class:`MedfcnError`."""
    summary = yield from iter_train_process(config, cancel, started=started)
    return config, summary


class ThreadedRun:
    """A generator (:func:`train_correction`) run in a plain Python thread, its items, end or error passed through
    a queue that the caller drains (:meth:`drain`) in its own thread, e.g. on a GUI timer. Nothing but the queue is
    shared: a napari ``thread_worker`` emits Qt signals from its thread, and one still running when the Train dock
    or the viewer closed aborted napari (SIGABRT, "GeneratorWorkerSignals has been deleted")."""

    def __init__(self, generator) -> None:
        self.messages: queue.Queue = queue.Queue()
        self.items: list = []  # every item yielded so far, in order
        self.thread = threading.Thread(target=self._drive, args=(generator,), name="medfcn-train", daemon=True)

    def _drive(self, generator) -> None:
        try:
            while True:
                self.messages.put(("item", next(generator)))
        except StopIteration as stop:
            self.messages.put(("done", stop.value))
        except BaseException as exc:  # said in the dock, in one line
            self.messages.put(("error", exc))

    def start(self) -> ThreadedRun:
        self.thread.start()
        return self

    def drain(self) -> list[tuple[str, object]]:
        """The messages arrived since the last call."""
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out
