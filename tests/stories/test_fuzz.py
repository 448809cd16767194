"""Fuzzing the reading layer: seeded corruptions of DICOM slice headers and NIfTI headers never end a batch.

Each trial corrupts 1-8 bytes of one header (seeds 0..N-1, recorded in any failure message) beside a good scan and
runs discovery and reading as the batch does (:mod:`tests.support.fuzz`). Every trial must end in a read or a one-line
:class:`~medfcn.errors.MedfcnError` for the corrupted case only, with the good scan read. ``benchmarks/bench_fuzz.py``
runs thousands of trials and counts the outcomes.
"""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from tests.support.fuzz import dicom_trial, make_template, nifti_trial

DICOM_SEEDS = range(120)
NIFTI_SEEDS = range(80)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_template(tmp_path_factory.mktemp("fuzz-template"))


@pytest.mark.parametrize(
    "trial, seeds", [(dicom_trial, DICOM_SEEDS), (nifti_trial, NIFTI_SEEDS)], ids=["dicom", "nifti"]
)
def test_corrupted_headers_fail_their_own_case_only(template, trial, seeds, caplog):
    caplog.set_level(logging.ERROR, logger="medfcn")  # a warning per corrupted file is expected; restored after
    outcomes, bad = Counter(), []
    for seed in seeds:
        outcome, detail = trial(template, seed)
        outcomes[outcome] += 1
        if outcome in ("internal", "crash"):
            bad.append(f"seed {seed}: {outcome}: {detail}")
        elif outcome == "error":
            assert "\n" not in detail and len(detail) > 10, (seed, detail)
    assert not bad, f"{len(bad)} of {len(seeds)} trials ended badly ({dict(outcomes)}): " + "; ".join(bad[:5])
    assert outcomes["error"] > 0  # the corruptions do reach the checks


OUTPUT_SEEDS = range(30)


def test_corrupted_dicom_headers_through_every_output_format_fail_in_one_named_line(
    template, segmenter, tmp_path, caplog
):
    """The corrupted case read, segmented and written as NIfTI, DICOM SEG and RTSTRUCT as the batch does: no
    exception escapes, every error names the series or the file, no slice is dropped without a warning."""
    from tests.support.fuzz import dicom_output_trial

    caplog.set_level(logging.CRITICAL, logger="medfcn")
    outcomes, bad = Counter(), []
    for seed in OUTPUT_SEEDS:
        outcome, detail = dicom_output_trial(template, seed, segmenter, tmp_path / "out")
        outcomes[outcome] += 1
        if outcome in ("traceback", "unnamed", "silent-left-out"):
            bad.append(f"seed {seed}: {outcome}: {detail}")
        elif outcome == "error":
            assert "\n" not in detail and "Traceback" not in detail, (seed, detail)
    assert not bad, f"{len(bad)} of {len(OUTPUT_SEEDS)} trials ended badly ({dict(outcomes)}): " + "; ".join(bad[:5])
    assert outcomes["error"] > 0 and outcomes["ok"] + outcomes["ok-warned"] > 0


OBJECT_SEEDS = range(40)


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    from tests.support.fuzz_objects import make_objects

    return make_objects(tmp_path_factory.mktemp("fuzz-objects"))


@pytest.mark.parametrize("kind", ["seg", "rtstruct"])
def test_damaged_seg_and_rtstruct_objects_are_refused_in_one_line_never_scored(objects, kind, tmp_path, caplog):
    """Damaged copies of a SEG and an RTSTRUCT (header bytes, frame-table and pixel-header tags, contour data, pixels)
    read on their series as evaluate scores them and, a SEG, alone as the napari reader shows it: no raw exception,
    no read over 10 s, no damaged object read with other labels (``tests/support/fuzz_objects.py``)."""
    from tests.support.fuzz_objects import BAD_OBJECT_OUTCOMES, object_trial

    caplog.set_level(logging.CRITICAL)
    outcomes, bad = Counter(), []
    for seed in OBJECT_SEEDS:
        outcome, detail = object_trial(objects, kind, seed, tmp_path / "damaged")
        outcomes[outcome] += 1
        if outcome in BAD_OBJECT_OUTCOMES:
            bad.append(f"seed {seed}: {outcome}: {detail}")
    assert not bad, f"{len(bad)} of {len(OBJECT_SEEDS)} trials ended badly ({dict(outcomes)}): " + "; ".join(bad[:5])
    assert outcomes["error"] > 0  # the damage does reach the checks
