"""ITK's MorphologicalContourInterpolator (the filter behind 3D Slicer's "Fill between slices"), in a child process.

Why a child process: ITK's Python wrapping and SimpleITK (medfcn's reader and writer) in one process crash at
interpreter exit, after the work is done (``malloc(): unaligned fastbin chunk detected``, SIGABRT; itk 5.4.7 with
SimpleITK 2.5.7): a command would exit 134 instead of 0, napari would crash on close. The child imports numpy and
ITK only, and leaves with ``os._exit`` (no interpreter teardown), whatever its parent's ``__main__`` imported.

Its first use loads ITK's wrapped modules: 12-21 s on a busy 2-core machine; later calls take about 0.1 s for a
head. So one :class:`ItkInterpolator` serves a whole session (the napari dock starts it when it opens, the CLI for
one command). The child ends when :meth:`ItkInterpolator.close` is called, when its input closes, or within a second
of its parent's death (:func:`_watch_parent`: killed while ITK loads, no child is left behind).

The request is a compact label map: labels ``1..N`` (uint8 or uint16, ITK's wrapped pixel types for this filter),
``(X, Y, Z)`` as medfcn holds voxels, which is ITK's index order ``(x, y, z)``: axis ``a`` here is ITK's axis ``a``.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["ItkInterpolator", "shared_interpolator", "itk_interpolate", "fill_labels"]

log = logging.getLogger(__name__)


def itk_interpolate(
    labels: np.ndarray,
    axis: int,
    slices: Mapping[int, Sequence[int]] | None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """ITK's filter on ``labels`` (X, Y, Z; uint8 or uint16) along index ``axis``, in *this* process (imports ITK).

    ``slices``: for each label, the slices it is interpolated between (ITK's custom slice positions); ``None``:
    ITK detects them itself (a slice counts where a voxel has the label all around it in-plane and nothing on
    both sides across it). Returns the filled map, same shape and type. Called in the child process; tests and
    benchmarks call it in a process of their own to compare with ITK used directly.
    """
    import itk

    pixel = {np.dtype(np.uint8): itk.UC, np.dtype(np.uint16): itk.US}[np.dtype(labels.dtype)]
    image = itk.image_from_array(np.ascontiguousarray(np.transpose(labels, (2, 1, 0))))  # ITK index (x, y, z)
    image.SetSpacing([float(s) for s in spacing])
    fill = itk.MorphologicalContourInterpolator[itk.Image[pixel, 3]].New()
    fill.SetInput(image)
    fill.SetAxis(int(axis))
    if slices is not None:
        fill.SetUseCustomSlicePositions(True)
        for label, where in slices.items():
            fill.SetLabeledSliceIndices(int(axis), int(label), [int(i) for i in where])
    fill.Update()
    return np.ascontiguousarray(np.transpose(itk.array_from_image(fill.GetOutput()), (2, 1, 0)))


_PARENT = "MEDFCN_ITK_PARENT"  # the pid the child serves (it may die before the child first looks)
_MARGIN = 4  # voxels around a label's in-plane bounding box


def fill_labels(
    codes: np.ndarray, axis: int, slices: Mapping[int, Sequence[int]], spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> np.ndarray:
    """The same as :func:`itk_interpolate` with custom slice positions on a multi-label map, label by label on each
    label's bounding box: ITK's filter with custom positions works on whole slices for every label (25 s for the
    116 AAL structures on Colin27, key slices every 4th, against 4-6 s cropped; the outputs were identical).

    Each label is filled alone on its box (slices ``slices[c]``' first to last; in-plane its voxels' extent plus
    4 voxels); a fill that reaches the side of its box where the box does not reach the map's edge is redone on
    whole slices, so cropping never changes a fill. Fills are combined as ITK combines labels: the higher label
    where fills meet, painted voxels unchanged. ``codes``: labels ``1..N``, uint8 or uint16 (X, Y, Z).
    """
    from scipy import ndimage

    out = np.zeros_like(codes)
    boxes = ndimage.find_objects(codes)
    for code in sorted(slices):
        where = sorted(int(i) for i in slices[code])
        if len(where) < 2 or code > len(boxes) or boxes[code - 1] is None:
            continue
        for margin in (_MARGIN, None):
            box = list(boxes[code - 1])
            for a in range(3):
                if a == axis:
                    box[a] = slice(where[0], where[-1] + 1)
                elif margin is None:
                    box[a] = slice(0, codes.shape[a])
                else:
                    box[a] = slice(max(box[a].start - margin, 0), min(box[a].stop + margin, codes.shape[a]))
            box = tuple(box)
            alone = (codes[box] == code).astype(np.uint8)
            filled = itk_interpolate(alone, axis, {1: [i - where[0] for i in where]}, spacing) > 0
            if margin is None or not _touches_cut_side(filled, box, axis, codes.shape):
                break
        region = out[box]
        np.maximum(region, np.where(filled, np.asarray(code, codes.dtype), 0), out=region)
    return np.where(codes > 0, codes, out)


def _touches_cut_side(mask: np.ndarray, box: tuple[slice, ...], axis: int, shape) -> bool:
    """Whether ``mask`` (the box's voxels) reaches a side of ``box`` across which the map goes on."""
    for a in range(3):
        if a == axis:
            continue
        if box[a].start > 0 and np.take(mask, 0, axis=a).any():
            return True
        if box[a].stop < shape[a] and np.take(mask, -1, axis=a).any():
            return True
    return False


def _warm() -> None:
    """Load ITK's wrapping for the filter (the slow first use) on a tiny map."""
    tiny = np.zeros((3, 3, 3), np.uint8)
    tiny[1, 1, 0] = tiny[1, 1, 2] = 1
    itk_interpolate(tiny, 2, None)


def _serve(inbox, outbox) -> None:
    """The child's loop: warm ITK, say ``("ready", None)``, then answer each request dict with ``("ok", array)``
    or ``("error", message)``; ``None`` or a closed pipe ends it. Messages are pickles on the two binary streams."""

    def reply(kind: str, value) -> None:
        pickle.dump((kind, value), outbox, protocol=pickle.HIGHEST_PROTOCOL)
        outbox.flush()

    try:
        _warm()
    except Exception as exc:
        reply("error", f"ITK's contour interpolator cannot be loaded ({type(exc).__name__}: {exc})")
        return
    reply("ready", None)
    while True:
        try:
            request = pickle.load(inbox)
        except (EOFError, OSError, pickle.UnpicklingError):
            return
        if request is None:
            return
        try:
            reply("ok", fill_labels(**request))
        except Exception as exc:
            reply("error", f"{type(exc).__name__}: {exc}")


def _watch_parent() -> None:
    """End this process within a second of its parent's death (a ``kill -9`` leaves no chance to close our input),
    even while ITK loads: its wrapped modules' start-up holds the interpreter lock for seconds at a time, so a thread
    here could not run (measured: an ITK process outlived its killed parent by over 30 s at load 7). On Linux a
    forked watcher process reads this process's parent from ``/proc`` and kills it when that changes; it leaves when
    this process has gone. Elsewhere a thread here watches."""
    me, parent = os.getpid(), int(os.environ.get(_PARENT, os.getppid()))
    if os.getppid() != parent:  # died before we got here
        os._exit(0)
    stat = Path(f"/proc/{me}/stat")

    def parent_of_me() -> int:  # field 4 of /proc/PID/stat, after the parenthesised command name
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])

    if hasattr(os, "fork") and stat.exists():
        if os.fork() == 0:
            os.closerange(0, 2)  # the pipes stay ITK's: its death is seen at once by the parent
            os.closerange(3, 1 << 16)
            code = 0
            try:
                while os.getppid() == me and parent_of_me() == parent:
                    time.sleep(0.5)
                if os.getppid() == me:
                    os.kill(me, signal.SIGKILL)
            except BaseException:
                code = 1
            os._exit(code)
        return

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=orphaned, daemon=True).start()


def _child_main() -> None:
    """``python -m medfcn.annotation.itk_process``: requests on stdin, replies on the stdout it was started with;
    anything ITK prints goes to stderr. Leaves with ``os._exit``: no interpreter teardown."""
    outbox = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _watch_parent()
    code = 0
    try:
        _serve(sys.stdin.buffer, outbox)
    except BaseException:
        code = 1
    finally:
        try:
            outbox.flush()
        except OSError:
            pass
        os._exit(code)


class ItkInterpolator:
    """One child process that runs ITK's filter, kept for later calls; thread-safe (one request at a time).

    The child is ``python -m medfcn.annotation.itk_process`` (not ``multiprocessing``, which re-runs the parent's
    main script in the child and fails in a script without a ``__main__`` guard).

    Use::

        with ItkInterpolator() as fill:
            filled = fill(codes, axis=2, slices={1: [10, 14, 18]})
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._ready = False

    def start(self) -> None:
        """Start the child (it loads ITK in the background); returns at once. Idempotent."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        import medfcn

        env = dict(os.environ)
        root = str(Path(medfcn.__file__).resolve().parent.parent)  # this medfcn, installed or a checkout
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        env[_PARENT] = str(os.getpid())
        self._process = subprocess.Popen(
            [sys.executable, "-m", "medfcn.annotation.itk_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._ready = False

    def _receive(self, process: subprocess.Popen):
        try:
            kind, value = pickle.load(process.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            if self._process is process:
                self._process = None
            try:
                code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            raise RuntimeError(f"ITK's interpolation process ended (exit code {code})") from None
        if kind == "error":
            raise RuntimeError(value)
        return value

    def __call__(
        self, codes: np.ndarray, axis: int, slices: Mapping[int, Sequence[int]], spacing=(1.0, 1.0, 1.0)
    ) -> np.ndarray:
        """:func:`fill_labels` in the child. Raises ``RuntimeError`` if ITK fails or the child dies (the next call
        starts a new child)."""
        request = {
            "codes": np.ascontiguousarray(codes),
            "axis": int(axis),
            "slices": {int(k): [int(i) for i in v] for k, v in slices.items()},
            "spacing": tuple(float(s) for s in spacing),
        }
        with self._lock:
            self._start()
            process = self._process
            if not self._ready:
                self._receive(process)
                self._ready = True
            try:
                pickle.dump(request, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                process.stdin.flush()
            except OSError:
                pass  # the child is gone: _receive says so
            return self._receive(process)

    def close(self, timeout: float = 5.0) -> None:
        """Ask the child to leave; end it if it has not within ``timeout`` seconds (mid-computation: a call
        waiting in another thread then raises ``RuntimeError``). Does not wait for a call in progress."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.close()  # end of input: the child leaves after the request in hand
        except OSError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
        process.stdout.close()

    def __enter__(self) -> ItkInterpolator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_shared: ItkInterpolator | None = None
_shared_lock = threading.Lock()


def shared_interpolator() -> ItkInterpolator:
    """This process's one long-lived ITK child, started on first use (the napari Annotate docks share it): loading
    ITK takes 10 s or more, so a second dock or viewer must not pay it again. It is never closed here; it ends when
    this process ends (its input closes, or its watcher sees the parent gone), and a killed child is started again
    by the next call."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ItkInterpolator()
        _shared.start()
        return _shared


if __name__ == "__main__":
    _child_main()
