"""The review queue over a batch's output folder (medfcn.batch.review_queue): its order, decisions kept beside the
manifest (never in it), corrected label maps beside the outputs (never over them), and what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfcn.batch.review_queue import (
    REVIEW_NAME,
    Decision,
    corrected_path,
    read_decisions,
    read_queue,
    record_decision,
    write_corrected_pairs,
)
from medfcn.batch.run import run_batch
from medfcn.data.pairs import find_pairs
from medfcn.data.reader import read_scan
from medfcn.data.writer import file_sha256, write_labels
from medfcn.errors import OutputError, UsageError
from medfcn.inference.settings import InferenceSettings
from tests.support.batch import write_cases
from tests.support.scans import affine_from_codes, write_scan_file

CPU = InferenceSettings(device="cpu")


@pytest.fixture(scope="module")
def batch(tmp_path_factory, model_file):
    """A real batch: two heads and a blank volume (flagged), segmented by the tiny model."""
    root = tmp_path_factory.mktemp("queue")
    write_cases(root / "in", 3)
    write_scan_file(root / "in" / "blank.nii.gz", np.zeros((20, 22, 16), np.int16), affine_from_codes("LPS"))
    run_batch([root / "in"], root / "out", model=model_file, settings=CPU, progress=False)
    return root


def test_the_queue_puts_flagged_cases_first_least_trustworthy_first(batch):
    out = batch / "out"
    entries = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["cases"]
    items = read_queue(out)
    assert {i.case for i in items} == {e["case"] for e in entries}  # every judged case
    by_hand = sorted(entries, key=lambda e: (not e["quality"]["review"], e["quality"]["score"], e["case"]))
    assert [i.case for i in items] == [e["case"] for e in by_hand]
    assert items[0].case == "blank" and items[0].review and items[0].score == 0.0
    assert items[0].line().startswith("! 0.00  blank  (")
    for item in items:
        entry = next(e for e in entries if e["case"] == item.case)
        assert item.label_map.is_file() and str(item.label_map) == entry["output"]
        assert item.scan.is_file() and item.decision is None and item.reasons == tuple(entry["quality"]["reasons"])


def test_decisions_go_beside_the_manifest_and_a_correction_beside_the_outputs(batch, model_file):
    out = batch / "out"
    manifest_sha = file_sha256(out / "manifest.json")
    outputs = {p.name: file_sha256(p) for p in out.glob("*.nii.gz")}
    record_decision(out, "case00", Decision.ACCEPTED)
    record_decision(out, "case01", "needs correction")
    item = next(i for i in read_queue(out) if i.case == "case01")
    labels = read_scan(item.label_map)
    corrected = labels.array.copy()
    corrected[:5] = 0  # the person removed the first five slices of the mask
    target = corrected_path(out, "case01")
    assert target == out / "corrected" / "case01.nii.gz"
    write_labels(corrected, labels, target)
    record_decision(out, "case01", Decision.CORRECTED, target)

    decisions = json.loads((out / REVIEW_NAME).read_text(encoding="utf-8"))["cases"]
    assert decisions["case00"]["decision"] == "accepted" and decisions["case00"]["corrected"] is None
    assert decisions["case01"]["decision"] == "corrected"
    assert decisions["case01"]["corrected"] == "corrected/case01.nii.gz"
    assert file_sha256(out / "manifest.json") == manifest_sha  # the manifest is never edited
    assert {p.name: file_sha256(p) for p in out.glob("*.nii.gz")} == outputs  # nor any output
    queue = {i.case: i for i in read_queue(out)}
    assert queue["case00"].decision == Decision.ACCEPTED and queue["case01"].corrected == target
    assert (read_scan(target).array == corrected).all()
    listed, n = write_corrected_pairs(out)  # one training set for medfcn train --pairs, read as training reads it
    assert n == 1 and listed == out / "corrected" / "pairs.csv"
    [pair] = find_pairs(pairs=listed)
    assert (pair.case, pair.image, pair.label) == ("case01", item.scan.resolve(), target.resolve())
    # the queue survives a rerun of the batch into the same folder (resume: everything kept)
    again = run_batch([batch / "in"], out, model=model_file, settings=CPU, progress=False)
    assert again.skipped == 4  # nothing redone, the corrected map and review.json left alone
    assert read_decisions(out)["case01"]["decision"] == "corrected"


def test_what_the_queue_refuses(batch, tmp_path):
    out = batch / "out"
    with pytest.raises(UsageError, match="no such case"):
        record_decision(out, "nobody", Decision.ACCEPTED)
    with pytest.raises(UsageError, match="is not one of"):
        record_decision(out, "case00", "fine")
    with pytest.raises(UsageError, match="needs the corrected label map"):
        record_decision(out, "case00", Decision.CORRECTED)
    outside = tmp_path / "elsewhere.nii.gz"
    outside.write_bytes(b"x")
    with pytest.raises(UsageError, match="inside the output folder"):
        record_decision(out, "case00", Decision.CORRECTED, outside)
    with pytest.raises(OutputError):
        corrected_path(out, "../case00")
    with pytest.raises(UsageError, match="not a medfcn batch's manifest"):
        read_queue(tmp_path)
    (tmp_path / "manifest.json").write_bytes((out / "manifest.json").read_bytes())
    with pytest.raises(UsageError, match="no case recorded as corrected yet"):
        write_corrected_pairs(tmp_path)


def test_a_damaged_review_file_is_named_and_never_overwritten(tmp_path, batch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_bytes((batch / "out" / "manifest.json").read_bytes())
    (out / REVIEW_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(UsageError, match="review.json: not a medfcn review file"):
        read_queue(out)
    with pytest.raises(UsageError, match="not a medfcn review file"):
        record_decision(out, "case00", Decision.ACCEPTED)
    assert (out / REVIEW_NAME).read_text(encoding="utf-8") == "{not json"
