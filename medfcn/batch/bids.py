"""``medfcn bids BIDS_DIR OUTPUT_DIR participant``: a BIDS App whose output is a BIDS derivatives dataset.

A thin layer on :func:`medfcn.batch.run.run_batch`: pybids (:class:`bids.BIDSLayout`) finds the images of the raw
dataset, the batch segments them (resume, the manifest, the lock and fault isolation are the batch's), and
:class:`DerivativesLayout` names each case's files after its source image, mirroring its folder and entities:

=====================================================  ========================================================
``sub-01/ses-1/anat/sub-01_ses-1_run-1_desc-brain_mask.nii.gz``  the label map (a mask: 0 and 1), with its ``.json``
``sub-01/ses-1/anat/sub-01_ses-1_run-1_desc-brain_T1w.nii.gz``   the source with everything outside the mask zero
                                                                 (same grid, type and scaling), with its ``.json``
=====================================================  ========================================================

- ``brain`` is the model's foreground label (the bundled model's). A model with another single label ``X`` writes
  ``desc-X_mask``; a model with several labels writes ``desc-medfcn_dseg.nii.gz`` with a ``_dseg.tsv`` of its
  labels beside each.
- Masks of the first ``--suffix`` (default ``T1w``) take ``desc-<label>``; an image of another suffix with the same
  entities would give the same mask name, so its masks take ``desc-<label><suffix>`` (``desc-brainT2w_mask``). The
  skull-stripped images keep their own suffix (``desc-brain_T2w``).
- Sidecars: ``Type`` (``Brain`` for a brain mask, else ``ROI``), ``SkullStripped`` for the masked image (true for a
  brain mask; the validator requires it of a preprocessed anatomical image), ``Sources`` and ``SpatialReference`` as
  BIDS URIs (``bids:raw:sub-01/...``; ``DatasetLinks`` in ``dataset_description.json`` says where ``raw`` is), and a
  ``medfcn`` object naming the model, its SHA-256, medfcn's version and the border moved (``border_mm``, when not 0).
- The dataset's own files: ``dataset_description.json`` (``DatasetType: derivative``, ``GeneratedBy`` medfcn with its
  version and the model's SHA-256), ``README.md`` and a ``.bidsignore`` listing the batch's ``manifest.json`` and
  ``statistics.csv``, which BIDS does not define.

Bad input is refused before anything is written (exit status 2, one line): a folder that is not a BIDS dataset, an
analysis level other than ``participant``, a participant or session label the dataset does not hold, a suffix no
selected image has, an output folder inside the dataset that is not under its ``derivatives/``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from medfcn import __version__
from medfcn.batch.outputs import MASKED_IMAGE, OutputFormat, OutputOptions
from medfcn.errors import UsageError

if TYPE_CHECKING:
    from medfcn.batch.manifest import Manifest
    from medfcn.data.discovery import CaseSpec
    from medfcn.model.checkpoint import Model

__all__ = ["BidsImage", "DerivativesLayout", "find_images", "check_output", "run_bids", "BIDS_VERSION"]

log = logging.getLogger(__name__)

BIDS_VERSION = "1.10.0"
_EXTENSIONS = (".nii.gz", ".nii")
_IGNORED = ("manifest.json", "statistics.csv", "evaluation/")  # the batch's files that BIDS does not define


@dataclass(frozen=True)
class BidsImage:
    """One image of the raw dataset: its path, its path relative to the dataset (POSIX) and its suffix."""

    path: str
    relpath: str
    suffix: str

    @property
    def entities(self) -> str:
        """The file name without ``_<suffix>.<extension>``: ``sub-01_ses-1_run-1``."""
        name = Path(self.relpath).name
        for ext in _EXTENSIONS:
            if name.endswith(f"_{self.suffix}{ext}"):
                return name[: -len(f"_{self.suffix}{ext}")]
        raise ValueError(f"{self.relpath}: not a NIfTI file with the suffix {self.suffix}")


def _alnum(text: str) -> str:
    """A BIDS label: letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]", "", text) or "label"


@dataclass(frozen=True)
class DerivativesLayout:
    """Where a case's files go in the derivatives dataset (a :class:`medfcn.batch.outputs.Layout`).

    ``images``: the raw images segmented; ``labels``: the model's ``(name, id)`` pairs; ``first_suffix``: the suffix
    whose masks take the plain ``desc-<label>``; ``model``: ``(name, sha256)`` and ``border_mm`` for the sidecars.
    """

    images: tuple[BidsImage, ...]
    labels: tuple[tuple[str, int], ...]
    first_suffix: str
    model: tuple[str, str]
    border_mm: float = 0.0

    @cached_property
    def _by_path(self) -> dict[str, BidsImage]:
        return {str(Path(i.path).absolute()): i for i in self.images}

    @property
    def foreground(self) -> list[tuple[str, int]]:
        return [(name, index) for name, index in self.labels if index != 0]

    @property
    def label(self) -> str:
        """The ``desc`` of a mask (one foreground label) or of a ``dseg`` (several)."""
        return _alnum(self.foreground[0][0]) if len(self.foreground) == 1 else "medfcn"

    def image(self, spec: CaseSpec) -> BidsImage:
        found = self._by_path.get(str(Path(spec.path).absolute()))
        if found is None:  # never: every case of a bids run is one of its images
            raise UsageError(f"{spec.path}: not one of the BIDS images this run selected")
        return found

    def files(
        self, out_dir: Path, spec: CaseSpec, formats: tuple[OutputFormat, ...], options: OutputOptions
    ) -> dict[str, Path]:
        image = self.image(spec)
        folder = Path(out_dir) / Path(image.relpath).parent
        desc = self.label if image.suffix == self.first_suffix else self.label + _alnum(image.suffix)
        kind = "mask" if len(self.foreground) == 1 else "dseg"
        stem = folder / f"{image.entities}_desc-{desc}_{kind}"
        files = {str(OutputFormat.NIFTI): stem.with_name(stem.name + ".nii.gz")}
        files["nifti.json"] = stem.with_name(stem.name + ".json")
        if kind == "dseg":
            files["dseg.tsv"] = stem.with_name(stem.name + ".tsv")
        if options.masked_image:
            stripped = folder / f"{image.entities}_desc-{self.label}_{image.suffix}"
            files[MASKED_IMAGE] = stripped.with_name(stripped.name + ".nii.gz")
            files["masked-image.json"] = stripped.with_name(stripped.name + ".json")
        return files

    def texts(self, files: Mapping[str, Path], spec: CaseSpec, model, quality: Mapping | None = None) -> dict[str, str]:
        """The mask's sidecar (with the case's quality verdict, ``medfcn.quality``, when it has one), the label
        table, and the skull-stripped image's sidecar."""
        image = self.image(spec)
        out_dir = Path(files[str(OutputFormat.NIFTI)]).parents[len(Path(image.relpath).parts) - 1]
        source = f"bids:raw:{image.relpath}"
        name, sha = self.model
        about = {"model": name, "model_sha256": sha, "medfcn_version": __version__}
        if self.border_mm:
            about["border_mm"] = self.border_mm
        brain = self.label == "brain"
        names = ", ".join(n for n, _ in self.foreground)
        mask = {
            "Description": f"{names} segmented by medfcn from the {image.suffix} image",
            "Sources": [source],
            "SpatialReference": source,
            "medfcn": {**about, "quality": dict(quality)} if quality else about,
        }
        if len(self.foreground) == 1:
            mask = {"Type": "Brain" if brain else "ROI", **mask}
        texts = {"nifti.json": _json(mask)}
        if "dseg.tsv" in files:
            texts["dseg.tsv"] = "index\tname\n" + "".join(f"{i}\t{n}\n" for n, i in self.labels)
        if MASKED_IMAGE in files:
            mask_uri = "bids::" + files[str(OutputFormat.NIFTI)].relative_to(out_dir).as_posix()
            stripped = {
                "Description": f"the {image.suffix} image with every voxel outside the {self.label} mask set to 0",
                "Sources": [source, mask_uri],
                "SpatialReference": source,
                "medfcn": about,
            }
            texts["masked-image.json"] = _json({"SkullStripped": brain, **stripped})  # required for anat derivatives
        return texts


def _json(data: Mapping) -> str:
    return json.dumps(data, indent=2) + "\n"


# -- the command ------------------------------------------------------------------------------------------------
def _labels(values: Sequence[str] | None, prefix: str) -> list[str] | None:
    """Labels as the BIDS App convention gives them, with or without their ``sub-``/``ses-`` prefix."""
    return None if not values else [v[len(prefix) :] if v.startswith(prefix) else v for v in values]


def find_images(
    bids_dir: str | Path,
    participants: Sequence[str] | None = None,
    sessions: Sequence[str] | None = None,
    suffixes: Sequence[str] = ("T1w",),
) -> list[BidsImage]:
    """The NIfTI images of ``bids_dir`` with one of ``suffixes``, for the participants and sessions asked (all when
    ``None``), found by pybids; sorted by path. Raises :class:`UsageError` (one line) for a folder that is not a BIDS
    dataset, a participant or session it does not hold, or a suffix that no selected image has."""
    from bids import BIDSLayout

    root = Path(bids_dir)
    if not root.is_dir():
        raise UsageError(f"{bids_dir}: no such folder (give the BIDS dataset's folder)")
    try:
        layout = BIDSLayout(str(root.absolute()), validate=True, derivatives=False)
    except Exception as e:  # pybids' BIDSValidationError and others: not a dataset it can index
        text = str(e).strip().splitlines()
        raise UsageError(f"{bids_dir}: not a BIDS dataset ({text[0] if text else type(e).__name__})") from None
    subjects, wanted = layout.get_subjects(), _labels(participants, "sub-")
    for label in wanted or []:
        if label not in subjects:
            raise UsageError(f"{bids_dir}: no participant sub-{label} (it holds {_listed(subjects, 'sub-')})")
    wanted_sessions = _labels(sessions, "ses-")
    held = layout.get_sessions(subject=wanted) if wanted else layout.get_sessions()
    for label in wanted_sessions or []:
        if label not in held:
            raise UsageError(f"{bids_dir}: no session ses-{label} for these participants ({_listed(held, 'ses-')})")
    query = {"subject": wanted, "session": wanted_sessions} if wanted_sessions else {"subject": wanted}
    query = {k: v for k, v in query.items() if v}
    images = []
    for suffix in suffixes:
        found = layout.get(suffix=suffix, extension=list(_EXTENSIONS), return_type="object", **query)
        if not found:
            whose = f"participants {', '.join(wanted)}" if wanted else "this dataset"
            raise UsageError(f"{bids_dir}: no {suffix} image for {whose} (--suffix names a BIDS suffix, e.g. T1w)")
        images += [BidsImage(f.path, Path(f.relpath).as_posix(), suffix) for f in found]
    if wanted:
        for label in wanted:
            if not any(Path(i.relpath).parts[0] == f"sub-{label}" for i in images):
                asked = ", ".join(suffixes)
                raise UsageError(f"{bids_dir}: participant sub-{label} has no image with the suffix {asked}")
    return sorted(images, key=lambda i: i.relpath)


def _listed(labels: Sequence[str], prefix: str) -> str:
    shown = [f"{prefix}{x}" for x in sorted(labels)[:8]]
    return ", ".join(shown) + (", ..." if len(labels) > 8 else "") if shown else "none"


def check_output(bids_dir: str | Path, out_dir: str | Path) -> None:
    """Refuse an output folder inside the BIDS dataset that is not under its ``derivatives/`` folder (BIDS keeps
    derived data there; anywhere else it would become part of the raw dataset). Raises :class:`UsageError`."""
    root, out = Path(bids_dir).resolve(), Path(out_dir).absolute().resolve()
    if out == root or root in out.parents:
        derivatives = root / "derivatives"
        if derivatives not in out.parents:
            raise UsageError(
                f"{out_dir}: inside the BIDS dataset {bids_dir} but not under its derivatives/ folder: write to "
                f"{derivatives / 'medfcn'} or outside the dataset"
            )


def run_bids(
    bids_dir: str | Path,
    out_dir: str | Path,
    *,
    images: Sequence[BidsImage],
    model: Model,
    options: OutputOptions,
    first_suffix: str,
    **batch,
) -> Manifest:
    """Segment ``images`` (:func:`find_images`) into the derivatives dataset ``out_dir`` with
    :func:`medfcn.batch.run.run_batch` (``batch``: its settings, cluster, overwrite and progress), then write the
    dataset's own files. Returns the batch's manifest."""
    from medfcn.batch.run import run_batch

    layout = DerivativesLayout(
        images=tuple(images),
        labels=tuple(sorted(model.card.labels.items(), key=lambda item: item[1])),
        first_suffix=first_suffix,
        model=(model.card.name or "medfcn model", model.sha256 or ""),
        border_mm=options.border_mm,
    )
    inputs = [str(Path(i.path).absolute()) for i in images]
    manifest = run_batch(inputs, out_dir, model=model, formats=("nifti",), options=options, layout=layout, **batch)
    _write_dataset_files(Path(bids_dir), Path(out_dir), model)
    return manifest


def _write_dataset_files(bids_dir: Path, out_dir: Path, model: Model) -> None:
    """``dataset_description.json``, ``README.md`` and ``.bidsignore`` (rewritten only when they change)."""
    from medfcn.data.writer import atomic_write_text

    raw = os.path.relpath(bids_dir.absolute().resolve(), out_dir.absolute().resolve())
    description = {
        "Name": f"medfcn segmentation of {bids_dir.absolute().resolve().name}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "medfcn",
                "Version": __version__,
                "Description": f"model {model.card.name or 'unnamed'}, SHA-256 {model.sha256}",
            }
        ],
        "SourceDatasets": [{"URL": "bids:raw:"}],
        "DatasetLinks": {"raw": Path(raw).as_posix()},
    }
    readme = (
        "# medfcn derivatives\n\nLabel maps (`desc-<label>_mask` or `_dseg`) and masked images "
        f"(`desc-<label>_<suffix>`) of the BIDS dataset `{Path(raw).as_posix()}`, made by medfcn {__version__} "
        "with the model "
        f"{model.card.name or 'unnamed'} (SHA-256 {model.sha256}). `manifest.json` records every case; "
        "`statistics.csv` (with `--statistics`) each label's volume and intensities.\n"
    )
    for name, text in (
        ("dataset_description.json", _json(description)),
        ("README.md", readme),
        (".bidsignore", "".join(f"{p}\n" for p in _IGNORED)),
    ):
        path = out_dir / name
        if not path.is_file() or path.read_text(encoding="utf-8", errors="replace") != text:
            atomic_write_text(path, text)
