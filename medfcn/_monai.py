"""MONAI, imported without the optional packages its package ``__init__`` drags in.

``import monai`` (or any ``from monai.x import y``) imports every MONAI submodule, and with them each optional
package that happens to be installed: ``matplotlib.pyplot`` (``monai.utils.jupyter_utils``), ``pandas``
(``monai.utils.profiling``), ``scipy.signal`` and through it ``scipy.stats`` (``monai.data.ultrasound_confidence_map``)
and ``skimage.morphology`` (``monai.transforms.utils``), and ``itk`` where it is installed (``monai.data.image_reader``
and ``image_writer``; medfcn reads and writes through SimpleITK and nibabel). Measured with ``python -X importtime -c
"import monai"`` they are about 80 % of MONAI's own import time (torch aside). medfcn uses none of the MONAI features
that need them (reading with ``LoadImage``, ``MetaTensor``, ``Orientation``, ``Spacing``, the trainer's transforms and
loss).

:func:`import_monai` imports MONAI with those packages refused *in the importing thread, for the duration of
that import*: MONAI records them as absent optional packages (its ``optional_import`` and ``try/except
ImportError``) and works on. Nothing else changes: other threads, and every later ``import matplotlib`` or
``import pandas``, get the real package. If MONAI was imported already, this does nothing.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

__all__ = ["import_monai", "load_image", "DEFERRED", "SKIPPED"]

# Packages MONAI imports at import time only for features medfcn does not use.
DEFERRED = (
    "matplotlib",  # monai.utils.jupyter_utils, monai.visualize
    "pandas",  # monai.utils.profiling, monai.data.dataset (CSV)
    "scipy.signal",  # monai.data.ultrasound_confidence_map
    "scipy.sparse.linalg",  # the same
    "scipy.optimize",  # monai.metrics.panoptic_quality
    "skimage.morphology",  # monai.transforms.utils (RemoveSmallObjects)
    "requests",  # monai.apps.tcia (downloads)
    "jsonschema",  # monai.bundle (config validation)
    "itk",  # monai.data.image_reader / image_writer / itk_torch_bridge (ITKReader, ITKWriter): 0.6-1.1 s
)


# MONAI's own subpackages that its ``__init__`` loads although medfcn's reading and model frame need none of them:
# refused there as MONAI's optional-import error, which its loader skips; each is imported when first asked for (the
# tests' cross-checks import monai.metrics and monai.inferers afterwards). 0.25 s CPU a process (3 runs, interleaved).
# monai.apps cannot be among them: monai.transforms.compose imports monai.apps.utils.
SKIPPED = (
    "monai.auto3dseg",
    "monai.engines",
    "monai.fl",
    "monai.handlers",
    "monai.bundle",
    "monai.optimizers",
    "monai.visualize",
    "monai.metrics",
    "monai.losses",
    "monai.inferers",
)


class _Refuse:
    """A ``sys.meta_path`` finder that refuses :data:`DEFERRED` and :data:`SKIPPED` (and their submodules) in one
    thread."""

    def __init__(self, thread: int) -> None:
        self.thread = thread

    def find_spec(self, name: str, path=None, target=None):  # noqa: ANN001 (the finder protocol)
        if threading.get_ident() != self.thread:
            return None
        if any(name == d or name.startswith(d + ".") for d in DEFERRED):
            raise ModuleNotFoundError(f"{name} deferred while MONAI imports (medfcn._monai)", name=name)
        if any(name == d or name.startswith(d + ".") for d in SKIPPED) and "monai.utils.module" in sys.modules:
            raise sys.modules["monai.utils.module"].OptionalImportError(f"{name} skipped (medfcn._monai)")
        return None


_lock = threading.Lock()


@contextmanager
def _deferring() -> Iterator[None]:
    """Within the block, this thread is refused :data:`DEFERRED` and :data:`SKIPPED`."""
    finder = _Refuse(threading.get_ident())
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def import_monai() -> ModuleType:
    """The ``monai`` package, imported (once) without the optional packages in :data:`DEFERRED`."""
    if "monai" in sys.modules:
        return sys.modules["monai"]
    with _lock:
        if "monai" in sys.modules:
            return sys.modules["monai"]
        with _deferring():
            return importlib.import_module("monai")


def load_image(**kwargs) -> Any:
    """MONAI's ``LoadImage(**kwargs)``, made without the optional packages in :data:`DEFERRED`: its constructor
    instantiates every default reader as a fallback, and ``ITKReader``'s imports ``itk`` where it is installed (0.15 s
    CPU, 0.5 s wall under load, with IPython and pygments); medfcn always passes its own reader, so the readers that
    need a deferred package are left out (MONAI skips a reader whose package is missing)."""
    import_monai()
    from monai.transforms import LoadImage

    with _deferring():
        return LoadImage(**kwargs)
