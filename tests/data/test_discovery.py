"""Finding cases in files and folders: case names, DICOM folders, several series, stable order."""

from __future__ import annotations

import numpy as np
import pytest

from medfcn.data.discovery import CaseSpec, case_name, find_cases
from medfcn.data.reader import read_scan
from medfcn.errors import NoScansError
from tests.support.scans import affine_from_codes, head_volume, write_dicom_pydicom

SHAPE = (12, 13, 10)


def dicom(folder, uid, number, seed=0, n=SHAPE[2]):
    vol = np.round(head_volume((SHAPE[0], SHAPE[1], n), seed))
    write_dicom_pydicom(
        folder,
        vol,
        affine_from_codes("LPS"),
        series_uid=uid,
        series_number=number,
        names=[f"{uid}-{k}.dcm" for k in range(n)],
    )


def test_case_names(tmp_path, write_scan):
    assert case_name("t1.nii.gz") == "t1"
    assert case_name("a/b/brain1_image.nrrd") == "brain1_image"
    assert case_name("x.mha") == "x" and case_name("x.mhd") == "x" and case_name("x.nii") == "x"
    assert case_name(tmp_path / "Patient 7") == "Patient 7"
    t1 = write_scan("t1.nii.gz", array=head_volume(SHAPE))
    nrrd = write_scan("brain1_image.nrrd", array=head_volume(SHAPE))
    cases = find_cases([t1, nrrd])
    assert [(c.path, c.case, c.series_uid, c.error) for c in cases] == [
        (t1, "t1", None, None),
        (nrrd, "brain1_image", None, None),
    ]
    assert find_cases(str(t1)) == [CaseSpec(t1, "t1")]


def test_dicom_folder_is_named_after_the_folder(tmp_path):
    dicom(tmp_path / "patient_a", "1.2.5.1", 3)
    (tmp_path / "patient_a" / "README.txt").write_text("notes")
    cases = find_cases(tmp_path / "patient_a")
    assert [(c.case, c.series_uid) for c in cases] == [("patient_a", "1.2.5.1")]
    assert read_scan(cases[0].path, series_uid=cases[0].series_uid, case=cases[0].case).case == "patient_a"


def test_two_series_folder_gives_one_case_per_series(tmp_path):
    folder = tmp_path / "study"
    dicom(folder, "1.2.5.20", 5, seed=1, n=8)
    dicom(folder, "1.2.5.3", 2, seed=2, n=10)
    cases = find_cases(folder)
    assert [(c.case, c.series_uid) for c in cases] == [("study_1", "1.2.5.3"), ("study_2", "1.2.5.20")]
    assert find_cases([folder]) == cases  # stable
    scans = [read_scan(c.path, series_uid=c.series_uid, case=c.case) for c in cases]
    assert [s.shape for s in scans] == [(12, 13, 10), (12, 13, 8)]
    assert [s.series_uid for s in scans] == ["1.2.5.3", "1.2.5.20"]


def test_folder_mixes_files_and_dicom_recursively_in_stable_order(tmp_path, write_scan):
    write_scan("in/b.nii.gz", array=head_volume(SHAPE))
    write_scan("in/a.nrrd", array=head_volume(SHAPE))
    write_scan("in/sub/c.mha", array=head_volume(SHAPE))
    dicom(tmp_path / "in" / "sub" / "ser", "1.2.6.1", 1)
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    (tmp_path / "in" / ".hidden.nii.gz").write_text("ignored: hidden (e.g. a partial output)")
    cases = find_cases(tmp_path / "in")
    assert [c.case for c in cases] == ["a", "b", "sub_c", "sub_ser"]  # the path relative to the folder searched
    assert all(c.error is None for c in cases)


def test_same_case_name_in_two_folders_is_told_apart(tmp_path, write_scan):
    write_scan("x/site1/t1.nii.gz", array=head_volume(SHAPE))
    write_scan("x/site2/t1.nii.gz", array=head_volume(SHAPE))
    assert [c.case for c in find_cases(tmp_path / "x")] == ["site1_t1", "site2_t1"]
    write_scan("y/t1.nii.gz", array=head_volume(SHAPE))  # two folders named apart give the same name: prefixed
    assert [c.case for c in find_cases([tmp_path / "x" / "site1", tmp_path / "y"])] == ["site1_t1", "y_t1"]


def test_names_are_stable_when_cases_are_added(tmp_path, write_scan):
    for sub in ("sub-01", "sub-02"):
        write_scan(f"bids/{sub}/anat/T1w.nii.gz", array=head_volume(SHAPE))
    before = {c.case: c.path for c in find_cases(tmp_path / "bids")}
    write_scan("bids/sub-00/anat/T1w.nii.gz", array=head_volume(SHAPE))
    after = {c.case: c.path for c in find_cases(tmp_path / "bids")}
    assert before == {
        "sub-01_anat_T1w": tmp_path / "bids/sub-01/anat/T1w.nii.gz",
        "sub-02_anat_T1w": tmp_path / "bids/sub-02/anat/T1w.nii.gz",
    }
    assert after == before | {"sub-00_anat_T1w": tmp_path / "bids/sub-00/anat/T1w.nii.gz"}


def test_a_series_split_across_folders_is_one_case(tmp_path):
    dicom(tmp_path / "study" / "ser" / "part1", "1.2.9.1", 1)
    for f in sorted((tmp_path / "study" / "ser" / "part1").iterdir())[: SHAPE[2] // 2]:
        (tmp_path / "study" / "ser" / "part2").mkdir(exist_ok=True)
        f.rename(tmp_path / "study" / "ser" / "part2" / f.name)
    [case] = find_cases(tmp_path / "study")
    assert (case.case, case.path, case.error, len(case.files)) == ("ser", tmp_path / "study" / "ser", None, SHAPE[2])
    scan = read_scan(case.path, series_uid=case.series_uid, files=case.files)
    assert scan.shape == SHAPE


def test_output_folders_and_excluded_folders_are_not_searched(tmp_path, write_scan):
    write_scan("in/a.nii.gz", array=head_volume(SHAPE))
    write_scan("in/out/a.nii.gz", array=head_volume(SHAPE))
    write_scan("in/old/b.nii.gz", array=head_volume(SHAPE))
    (tmp_path / "in" / "old" / "manifest.json").write_text('{"medfcn_version": "0.1.0", "cases": []}')
    (tmp_path / "in" / "dir.nii.gz").mkdir()  # a folder named like a scan is not a case
    assert [c.case for c in find_cases(tmp_path / "in", exclude=[tmp_path / "in" / "out"])] == ["a"]
    assert [c.case for c in find_cases(tmp_path / "in" / "old")] == ["b"]  # named itself: searched


def test_broken_series_is_a_case_with_its_error(tmp_path):
    dicom(tmp_path / "gap", "1.2.7.1", 1)
    (tmp_path / "gap" / "1.2.7.1-4.dcm").unlink()
    cases = find_cases(tmp_path / "gap")
    assert len(cases) == 1 and cases[0].case == "gap" and "missing" in cases[0].error


def test_broken_series_beside_a_good_one(tmp_path):
    dicom(tmp_path / "study", "1.2.8.1", 1)
    dicom(tmp_path / "study", "1.2.8.2", 2)
    (tmp_path / "study" / "1.2.8.2-4.dcm").unlink()
    cases = find_cases(tmp_path / "study")
    assert [(c.case, c.series_uid) for c in cases] == [("study_1", "1.2.8.1"), ("study_2", "1.2.8.2")]
    assert cases[0].error is None and "missing" in cases[1].error


@pytest.mark.parametrize("make", ["empty", "text only", "missing"])
def test_no_scans_is_an_error_naming_the_path(tmp_path, make):
    path = tmp_path / "input"
    if make != "missing":
        path.mkdir()
    if make == "text only":
        (path / "README.txt").write_text("no scans")
        (path / "sub").mkdir()
    with pytest.raises(NoScansError) as e:
        find_cases([path])
    assert str(path) in str(e.value) and "\n" not in str(e.value) and e.value.exit_code == 2


def test_pair_cases_pairs_by_name_and_names_what_is_left(tmp_path):
    from medfcn.data.discovery import CaseSpec, pair_cases
    from medfcn.errors import MedfcnError, NoScansError

    def specs(*names):
        return [CaseSpec(tmp_path / f"{n}.nii.gz", n) for n in names]

    paired = pair_cases(specs("b", "a", "x"), specs("a", "b", "y"))
    assert [(c, i.path.name, la.path.name) for c, i, la in paired.pairs] == [
        ("a", "a.nii.gz", "a.nii.gz"),
        ("b", "b.nii.gz", "b.nii.gz"),
    ]
    assert (paired.only_first, paired.only_second) == (["x"], ["y"])
    with pytest.raises(NoScansError, match="no case names are shared by the images .* pair by file name"):
        pair_cases(specs("x"), specs("y"))
    with pytest.raises(MedfcnError, match="case a is named twice among the labels"):
        pair_cases(specs("a"), specs("a", "a"))
