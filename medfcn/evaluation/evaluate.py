"""Scoring predicted label maps against references, case by case: ``metrics.csv``, ``metrics.json``, ``report.html``.

Pairing: ``pred`` and ``ref`` are files or folders of anything :func:`medfcn.data.reader.read_scan` reads, found with
:func:`medfcn.data.discovery.find_cases`, and DICOM SEG and RTSTRUCT files, rebuilt on the grid of the series they
reference (given with ``series``; see :mod:`medfcn.dicom.label_objects`); cases pair by case name (file name without its
extension; :func:`medfcn.data.discovery.pair_cases`, the rule training uses too). Two single files always pair, under
the prediction's name. In a folder of predictions, a batch's masked images (``<case>.masked.nii.gz``) and the
review queue's ``corrected/`` folder are never predictions; a batch's output folder is scored on the cases its
manifest records as segmented (``predictions``, which the CLI reads with
:func:`medfcn.batch.manifest.segmented_cases`), not on every file in it. Cases on one side only are listed in
:attr:`Evaluation.unmatched_pred` and :attr:`Evaluation.unmatched_ref`; a case that cannot be read, or whose grids
differ, is one line in :attr:`Evaluation.failed` and the others go on. A prediction stored in another index order on
the same voxels (axes permuted or flipped, e.g. a DICOM series read in reverse) is reordered exactly, not refused
(scoring itself, in memory, is :mod:`medfcn.evaluation.scoring`; the HTML report is :mod:`medfcn.evaluation.report`).

Labels: every nonzero id found in any case, plus the ids of ``label_names``; every case has a row for every label
(a label neither map of a case holds scores as "both empty", see :mod:`medfcn.evaluation.metrics`), so a structure
missed in one case can never drop out of its label's mean.

Quality verdicts (``quality``; the CLI reads them from ``pred``'s ``manifest.json`` when it is a batch's output
folder) go into ``metrics.csv`` (:data:`~medfcn.evaluation.results.QUALITY_COLUMNS`), ``metrics.json`` and the
report, with how well the flags matched the Dice (:mod:`medfcn.evaluation.flags`).

Images under the overlays: ``images`` (``{case: path}`` or a folder), else a folder beside a reference folder named
``labels*`` whose name has ``images`` in its place (``labelsTr`` -> ``imagesTr``), matched by case name or as
``CASE_0000``; an image on another grid than its reference is left out. Without one, the overlays are drawn on the
masks alone.

Example::

    ev = evaluate("seg/", "labels/", "report/")
    print("\\n".join(ev.summary_lines()))
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medfcn.data.discovery import CaseSpec, find_cases, pair_cases
from medfcn.data.filenames import CORRECTED_FOLDER, MASKED_SUFFIX
from medfcn.data.scan import Scan
from medfcn.data.writer import atomic_write_text
from medfcn.dicom.label_objects import label_object_cases, read_label_object
from medfcn.dicom.refs import SeriesIndex, dicom_label_kind
from medfcn.errors import MedfcnError, NoScansError, UsageError
from medfcn.evaluation.metrics import LabelMetrics
from medfcn.evaluation.report import render_html
from medfcn.evaluation.results import Evaluation, MetricRow, Thumbnail
from medfcn.evaluation.scoring import score_scans
from medfcn.evaluation.thumbnails import case_thumbnails

__all__ = ["evaluate", "evaluate_scans"]

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = ("_0000",)  # nnU-Net names the first channel of case X "X_0000"


# --- pairing ---------------------------------------------------------------------------------------------------


def _find(path: Path, series: SeriesIndex) -> list[CaseSpec]:
    """The cases at ``path``: scans (:func:`find_cases`), then DICOM SEG/RTSTRUCT files
    (:mod:`medfcn.dicom.label_objects`) for the case names not taken."""
    objects = label_object_cases(path, series)
    specs: list[CaseSpec] = []
    if not (path.is_file() and objects):
        try:
            specs = find_cases(path)
        except NoScansError:
            if not objects:
                raise
    taken = {c.case for c in specs}
    objects = [o for o in objects if o.case not in taken]
    _check_series(objects, series)
    return specs + objects


def _check_series(specs: Sequence[CaseSpec], series: SeriesIndex) -> None:
    """Refuse DICOM SEG/RTSTRUCT files among ``specs`` when no series folder is given to rebuild them on."""
    objects = [c for c in specs if not c.error and c.path.is_file() and dicom_label_kind(c.path) is not None]
    if objects and not series.folders:
        raise UsageError(
            f"{objects[0].path}: a DICOM {dicom_label_kind(objects[0].path).upper()} is rebuilt on the series it "
            "references: give the folder holding that series with --series DIR"
        )


def _predictions(pred: Path, series: SeriesIndex, listed: Sequence[CaseSpec] | None) -> list[CaseSpec]:
    """The predictions: ``listed`` (a batch's segmented cases) when given, else the cases found at ``pred``; in a
    folder, never a batch's masked images (``<case>.masked.nii.gz``) nor a review's ``corrected/`` label maps."""
    if listed is not None:
        _check_series(listed, series)
        return list(listed)
    found = _find(pred, series)
    if not pred.is_dir():
        return found
    corrected = (pred / CORRECTED_FOLDER).absolute()
    return [
        c
        for c in found
        if not c.path.name.lower().endswith(MASKED_SUFFIX) and not c.path.absolute().is_relative_to(corrected)
    ]


def _pair(
    pred: Path, ref: Path, series: SeriesIndex, listed: Sequence[CaseSpec] | None = None
) -> tuple[list[tuple[str, CaseSpec, CaseSpec]], list[str], list[str]]:
    preds, refs = _predictions(pred, series, listed), _find(ref, series)
    if pred.is_file() and ref.is_file():  # two files named on the command line are one case, whatever their names
        return [(preds[0].case, preds[0], refs[0])], [], []
    paired = pair_cases(preds, refs, sides=(f"predictions in {pred}", f"references in {ref}"))
    return paired.pairs, paired.only_first, paired.only_second


def _read(spec: CaseSpec, series: SeriesIndex | None = None) -> Scan:
    """A prediction or reference as a label map: a SEG or RTSTRUCT on its series, else a file whose non-finite
    values are refused (:func:`medfcn.data.reader.read_label_map`)."""
    if series is not None and not spec.error and spec.path.is_file() and dicom_label_kind(spec.path) is not None:
        return read_label_object(spec.path, series, spec.case)
    return spec.read_labels()


def _image_specs(images: Mapping[str, str | Path | CaseSpec] | str | Path | None, ref: Path) -> dict[str, CaseSpec]:
    if isinstance(images, Mapping):
        return {str(k): v if isinstance(v, CaseSpec) else CaseSpec(Path(v), str(k)) for k, v in images.items()}
    folder = Path(images) if images is not None else None
    if folder is None and ref.is_dir() and ref.name.lower().startswith("labels"):
        sibling = ref.parent / ("images" + ref.name[len("labels") :])
        folder = sibling if sibling.is_dir() else None
    if folder is None:
        return {}
    try:
        specs = find_cases(folder)
    except NoScansError:
        return {}
    out = {c.case: c for c in specs}
    out.update({c.case[: -len(s)]: c for c in specs for s in _IMAGE_SUFFIXES if c.case.endswith(s)})
    return out


# --- the evaluation --------------------------------------------------------------------------------------------


def _check_tolerance(tolerance_mm: float) -> None:
    if not (np.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise UsageError(f"the surface Dice tolerance must be a number of mm >= 0, got {tolerance_mm}")


def _label_map(label_names: Mapping | None) -> dict[int, str]:
    """``{id: name}`` from ``{id: name}`` or from a model card's ``{name: id}``."""
    if not label_names:
        return {}
    items = [(v, k) if isinstance(k, str) and not isinstance(v, str) else (k, v) for k, v in label_names.items()]
    return {int(k): str(v) for k, v in items}


def _scored(
    case: str, pred: Scan, ref: Scan, image: Scan | None, tolerance_mm: float
) -> tuple[dict[int, LabelMetrics], list[Thumbnail]]:
    """``({label: metrics}, thumbnails)`` of one case (:func:`medfcn.evaluation.scoring.score_scans`); ``image``
    (drawn under the thumbnails) is left out when it is on another grid."""
    scores = score_scans(pred, ref, case=case, tolerance_mm=tolerance_mm)
    under = None
    if image is not None:
        under = image.array if not ref.grid.differences(image.grid) else None
        if under is None:
            log.warning("%s: the image %s is on another grid; overlays drawn on the masks", case, image.source)
    thumbnails = case_thumbnails(
        scores.pred, ref.array, ref.spacing, direction=ref.direction, image=under, labels=sorted(scores.metrics)
    )
    return scores.metrics, thumbnails


def _score_case(case, pred_spec, ref_spec, image_spec, tolerance_mm, series) -> tuple[dict, list[Thumbnail]]:
    pred_scan, ref_scan = _read(pred_spec, series), _read(ref_spec, series)
    image = None
    if image_spec is not None:
        try:
            image = image_spec.read()
        except MedfcnError as e:
            log.warning("%s: image not used (%s)", case, e)
    return _scored(case, pred_scan, ref_scan, image, tolerance_mm)


def _finish(ev: Evaluation, results: dict[str, dict[int, LabelMetrics]], out_dir: Path) -> Evaluation:
    """Fill ``ev.rows`` (every label of any case, in every case) and write the three files atomically."""
    labels = sorted({k for k in ev.label_names if k != 0}.union(*results.values()))
    ev.rows = [
        MetricRow.of(case, label, m.get(label) or LabelMetrics.both_empty())
        for case, m in results.items()
        for label in labels
    ]
    atomic_write_text(out_dir / "metrics.csv", ev.to_csv())
    atomic_write_text(out_dir / "metrics.json", json.dumps(ev.to_json(), indent=1) + "\n")
    atomic_write_text(out_dir / "report.html", render_html(ev))
    return ev


def evaluate_scans(
    case: str,
    pred: Scan,
    ref: Scan,
    out_dir: str | Path,
    *,
    image: Scan | None = None,
    tolerance_mm: float = 1.0,
    label_names: Mapping[int, str] | Mapping[str, int] | None = None,
    pred_source: str = "",
    ref_source: str = "",
) -> Evaluation:
    """:func:`evaluate` of one case held in memory (e.g. two napari layers): no temporary files.

    ``pred_source`` and ``ref_source`` are what the report names as the prediction and the reference (a layer
    and its scan file, say).

    Raises:
        MedfcnError: the grids differ or a map holds non-integer values (nothing is written then).
        OutputError: the report cannot be written.
    """
    _check_tolerance(tolerance_mm)
    out_dir = Path(out_dir)
    metrics, thumbnails = _scored(case, pred, ref, image, tolerance_mm)
    ev = Evaluation(
        rows=[],
        label_names=_label_map(label_names),
        tolerance_mm=tolerance_mm,
        thumbnails={case: thumbnails},
        pred_source=pred_source,
        ref_source=ref_source,
        out_dir=out_dir,
    )
    return _finish(ev, {case: metrics}, out_dir)


def evaluate(
    pred: str | Path,
    ref: str | Path,
    out_dir: str | Path,
    *,
    tolerance_mm: float = 1.0,
    label_names: Mapping[int, str] | Mapping[str, int] | None = None,
    images: Mapping[str, str | Path | CaseSpec] | str | Path | None = None,
    series: Sequence[str | Path] = (),
    predictions: Sequence[CaseSpec] | None = None,
    statistics: Mapping[str, Mapping[str, Mapping]] | None = None,
    quality: Mapping[str, dict] | None = None,
) -> Evaluation:
    """Score every prediction against its reference and write ``out_dir``/``metrics.csv``, ``metrics.json`` and
    ``report.html`` (atomically).

    Args:
        pred, ref: label-map files or folders (any format :func:`medfcn.data.reader.read_scan` reads).
        out_dir: the report folder (created).
        tolerance_mm: the tolerance of the surface Dice, in mm.
        label_names: ``{id: name}`` (or a model card's ``{name: id}``); background 0 is never scored.
        images: the scans under the overlay thumbnails: ``{case: path or CaseSpec}`` (a CaseSpec names the series of
            a DICOM folder) or a folder (see the module docstring).
        series: folders holding the DICOM series that SEG and RTSTRUCT files in ``pred`` or ``ref`` reference
            (searched recursively); each such file is rebuilt on its series' grid (:mod:`medfcn.dicom.label_objects`).
        predictions: the predictions to score, when ``pred`` is a batch's output folder: the cases its manifest
            records as segmented (:func:`medfcn.batch.manifest.segmented_cases`). Without them, every label map
            found in ``pred`` but a batch's masked images and a review's ``corrected/`` folder (module docstring).
        statistics: ``{case: {label: statistics}}`` of the batch (``segment --statistics``), shown in the report.
        quality: ``{case: verdict}`` (a batch manifest's ``quality`` entries,
            :func:`medfcn.batch.manifest.read_verdicts`), carried into the outputs with how well the flags matched.

    Returns:
        An :class:`Evaluation`; cases that could not be scored are in ``.failed``, one line each.

    Raises:
        NoScansError: ``pred`` or ``ref`` does not exist or holds no scan, or no case pairs.
        UsageError: a SEG or RTSTRUCT is given but no ``series`` folder.
        OutputError: the report cannot be written.
        MedfcnError: ``tolerance_mm`` is negative or not finite.
    """
    _check_tolerance(tolerance_mm)
    pred, ref, out_dir = Path(pred), Path(ref), Path(out_dir)
    names = _label_map(label_names)
    index = SeriesIndex([Path(f) for f in series])
    pairs, unmatched_pred, unmatched_ref = _pair(pred, ref, index, predictions)
    image_specs = _image_specs(images, ref)
    results: dict[str, dict[int, LabelMetrics]] = {}
    ev = Evaluation(
        rows=[],
        unmatched_pred=unmatched_pred,
        unmatched_ref=unmatched_ref,
        label_names=names,
        tolerance_mm=tolerance_mm,
        pred_source=str(pred),
        ref_source=str(ref),
        out_dir=out_dir,
        statistics={k: dict(v) for k, v in (statistics or {}).items()},
        quality=dict(quality or {}),
    )
    for i, (case, pred_spec, ref_spec) in enumerate(pairs, 1):
        log.info("evaluating %s (%d/%d)", case, i, len(pairs))
        try:
            scored = _score_case(case, pred_spec, ref_spec, image_specs.get(case), tolerance_mm, index)
            results[case], ev.thumbnails[case] = scored
        except MedfcnError as e:
            msg = str(e) if str(e).startswith(f"{case}:") else f"{case}: {e}"
            log.info("failed: %s", msg)  # reported in .failed, not logged twice
            ev.failed.append(msg)
        except Exception as e:  # a reader's bug on one odd file ends that case, never the evaluation of the rest
            text = str(e).strip().splitlines()
            files = " and ".join(str(s.path) for s in (pred_spec, ref_spec))
            ev.failed.append(f"{case}: {type(e).__name__}: {text[0] if text else ''} (reading {files})")
            log.warning("%s", ev.failed[-1])
    return _finish(ev, results, out_dir)
