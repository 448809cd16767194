"""`medfcn segment --format` and `medfcn evaluate --series` with DICOM SEG and RTSTRUCT, as a user runs them;
label codes on the model card; the napari SEG writer (no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medfcn.batch.outputs import OutputFormat, parse_formats
from medfcn.cli import main
from medfcn.data.reader import read_scan
from medfcn.dicom.codes import parse_label_codes
from medfcn.dicom.refs import SeriesIndex
from medfcn.dicom.seg import read_seg
from medfcn.errors import ModelError, UsageError
from medfcn.model.checkpoint import ModelCard
from tests.support.batch import SHAPE
from tests.support.dicom import LABELS, synthetic_labels, write_all
from tests.support.napari import empty_labels_on, gui
from tests.support.scans import affine_from_codes, head_volume, shuffled_names, write_dicom_pydicom, write_scan_file


@pytest.fixture
def inputs(tmp_path) -> Path:
    root = tmp_path / "in"
    vol = head_volume(SHAPE)
    write_dicom_pydicom(root / "series", np.round(vol), affine_from_codes("LPS"), names=shuffled_names(SHAPE[2]))
    write_scan_file(root / "plain.nii.gz", vol, affine_from_codes("RAS"))
    return root


def test_segment_writes_every_format_for_dicom_and_fails_the_other_case_in_one_line(tmp_path, inputs, model_file):
    out = tmp_path / "out"
    args = ["segment", str(inputs), "-o", str(out), "--model", str(model_file), "--quiet"]
    assert main([*args, "--format", "nifti,dicom-seg,rtstruct"]) == 1  # one case failed, the batch went on
    cases = {c["case"]: c for c in json.loads((out / "manifest.json").read_text())["cases"]}
    ok = cases["series"]
    assert ok["status"] == "ok" and ok["outputs"] == [
        str(out / f"series{s}") for s in (".nii.gz", ".seg.dcm", ".rtstruct.dcm")
    ]
    failed = cases["plain"]
    assert failed["status"] == "failed" and "not a DICOM series" in failed["error"] and "\n" not in failed["error"]
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "series.nii.gz",
        "series.rtstruct.dcm",
        "series.seg.dcm",
    ]
    seg = read_seg(out / "series.seg.dcm", SeriesIndex([inputs]))
    nifti = read_scan(out / "series.nii.gz")
    assert np.array_equal(seg.array, nifti.array) and nifti.array.any()
    # a rerun skips the finished case; a damaged SEG makes it redo the case
    assert main([*args, "--format", "nifti,dicom-seg,rtstruct"]) == 1
    assert json.loads((out / "manifest.json").read_text())["cases"][1]["status"] == "skipped"
    (out / "series.seg.dcm").write_bytes(b"DICM half a file")
    main([*args, "--format", "nifti,dicom-seg,rtstruct"])
    assert {c["case"]: c["status"] for c in json.loads((out / "manifest.json").read_text())["cases"]}["series"] == "ok"
    assert np.array_equal(read_seg(out / "series.seg.dcm", SeriesIndex([inputs])).array, nifti.array)


def test_format_choices_are_checked(tmp_path, inputs, model_file, capsys):
    assert parse_formats("dicom-seg,nifti,dicom-seg") == (OutputFormat.DICOM_SEG, OutputFormat.NIFTI)
    with pytest.raises(UsageError, match="dicom-seg"):
        parse_formats("nifti,dicomseg")
    assert main(["segment", str(inputs), "-o", str(tmp_path / "o"), "--format", "png", "--quiet"]) == 2
    assert "is not one of: nifti, dicom-seg, rtstruct" in capsys.readouterr().err


def _evaluate(pred, ref, report, series) -> int:
    """``medfcn evaluate PRED REF -o REPORT --series SERIES``: its exit status."""
    return main(["evaluate", str(pred), str(ref), "-o", str(report), "--series", str(series)])


def test_evaluate_scores_seg_against_seg_and_rtstruct_on_the_series_grid(tmp_path, inputs, capsys):
    folder = inputs / "series"
    scan = read_scan(folder)
    ref = synthetic_labels(scan)
    pred = np.roll(ref, 2, axis=0)
    p = write_all(scan, pred, tmp_path / "pred")
    r = write_all(scan, ref, tmp_path / "ref")
    report = tmp_path / "report"
    code = _evaluate(p[OutputFormat.DICOM_SEG], r[OutputFormat.DICOM_SEG], report, inputs)
    assert code == 0
    scores = json.loads((report / "metrics.json").read_text())["cases"]["series"]
    for label in (1, 2):
        a, b = pred == label, ref == label
        assert scores[str(label)]["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), abs=1e-9)
    # an RTSTRUCT reference gives the same numbers (its contours fill back exactly)
    assert _evaluate(p[OutputFormat.DICOM_SEG], r[OutputFormat.RTSTRUCT], report, inputs) == 0
    again = json.loads((report / "metrics.json").read_text())["cases"]["series"]
    assert again["1"]["dice"] == scores["1"]["dice"] and again["2"]["hd95_mm"] == scores["2"]["hd95_mm"]
    # a folder of SEGs pairs with a folder of NIfTI label maps through the series' case name
    assert _evaluate(tmp_path / "pred", tmp_path / "ref", report, inputs) == 0
    capsys.readouterr()
    # no --series: refused before anything is read
    assert main(["evaluate", str(p[OutputFormat.DICOM_SEG]), str(r[OutputFormat.NIFTI]), "-o", str(report)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--series DIR" in err[0] and "seg.dcm" in err[0]
    # --series without the referenced series: that case fails with a clear line
    (tmp_path / "elsewhere").mkdir()
    assert _evaluate(p[OutputFormat.DICOM_SEG], r[OutputFormat.NIFTI], report, tmp_path / "elsewhere") == 1
    assert "which is not under the --series folder" in capsys.readouterr().out


def test_label_codes_on_the_card_and_in_info(tmp_path, capsys):
    codes = {"brain": {"category": ["91723000", "SCT", "Anatomical Structure"], "type": ["12738006", "SCT", "Brain"]}}
    card = ModelCard(label_codes=parse_label_codes(json.dumps(codes)))
    assert ModelCard.from_json(card.to_json()).label_codes == codes
    with pytest.raises(ModelError, match="not a foreground label"):
        ModelCard(label_codes={"liver": codes["brain"]})
    with pytest.raises(ModelError, match="VALUE, SCHEME, MEANING|value, scheme, meaning"):
        ModelCard(label_codes={"brain": {"category": ["1", "SCT"], "type": ["2", "SCT", "x"]}})
    path = tmp_path / "codes.json"
    path.write_text(json.dumps(codes))
    assert parse_label_codes(str(path)) == codes
    with pytest.raises(UsageError):
        parse_label_codes(str(tmp_path / "missing.json"))
    assert main(["info"]) == 0
    assert "Brain (SCT 12738006)" in capsys.readouterr().out


def test_napari_writer_saves_a_labels_layer_as_seg_of_its_series(tmp_path, inputs):
    from napari_plugin._dicom_writer import write_dicom_seg
    from napari_plugin._layers import scan_layer_data

    scan = read_scan(inputs / "series")
    labels = synthetic_labels(scan)
    data, attributes, _ = scan_layer_data(scan.with_array(labels), layer_type="labels")
    attributes["metadata"]["label_names"] = {"1": "brain", "2": "lesion"}  # as the Segment dock stores them
    [path] = write_dicom_seg(tmp_path / "mine", data, attributes)
    assert path.endswith("mine.seg.dcm")
    seg = read_seg(path, SeriesIndex([inputs]))
    assert np.array_equal(seg.array, labels)
    import pydicom

    assert [s.SegmentLabel for s in pydicom.dcmread(path).SegmentSequence] == list(LABELS)[1:]
    plain = scan_layer_data(read_scan(inputs / "plain.nii.gz"), layer_type="labels")
    from medfcn.errors import UnsupportedScanError

    with pytest.raises(UnsupportedScanError, match="not a DICOM series"):
        write_dicom_seg(tmp_path / "x.dcm", np.zeros_like(plain[0]), plain[1])


@gui
def test_napari_save_selected_layers_as_dcm_writes_a_seg_of_the_opened_series(viewer, tmp_path, inputs):
    from napari.plugins.io import save_layers

    (image,) = viewer.open(str(inputs / "series"), plugin="medfcn")
    drawn = empty_labels_on(viewer, image)
    drawn.data[2:9, 3:12, 4:10] = 1  # a block painted on the displayed (reordered) array
    out = tmp_path / "drawn.seg.dcm"
    save_layers(str(out), [drawn], plugin="medfcn")
    seg = read_seg(out, SeriesIndex([inputs]))
    nifti = tmp_path / "drawn.nii.gz"
    save_layers(str(nifti), [drawn], plugin="medfcn")  # the same layer through the NIfTI writer
    assert np.array_equal(seg.array, read_scan(nifti).array) and seg.array.sum() == 7 * 9 * 6
    # the Review dock's Save writes a SEG for a .dcm name
    from napari_plugin._widgets.review import ReviewWidget

    widget = ReviewWidget(viewer)
    widget.prediction.value = drawn
    widget.save_path.value = tmp_path / "from_review.dcm"
    out = widget.save()
    assert out is not None and np.array_equal(read_seg(out, SeriesIndex([inputs])).array, seg.array)
