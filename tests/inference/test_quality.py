"""The evidence of a segmentation (medfcn.inference.quality) and the verdict made from it (medfcn.inference.verdict).

Numbers are checked against hand-worked cases and against independent computations: the slice directions' labels
recomputed from the engine's probabilities one direction at a time, volumes from voxel counts, quantiles from numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfcn.data.scan import Scan
from medfcn.inference.quality import (
    AxisVotes,
    Evidence,
    FrameEvidence,
    face_names,
    intensity_quantiles,
    measure_frame,
    measure_labels,
    record_expectations,
)
from medfcn.inference.verdict import DEFAULT_LEVELS, REVIEW_BELOW, Verdict, judge
from medfcn.model.expectations import Expectations
from tests.support.scans import head_volume


def test_axis_votes_mark_where_any_direction_differs():
    votes = AxisVotes((3, 4, 5), n_axes=3)
    a = np.zeros((3, 4, 5), np.uint8)
    a[1] = 1
    votes.add(0, axis=0, start=0, labels=a)  # along axis 0: batch (B, H, W) = the slices a[0], a[1], a[2]
    b = a.copy()
    b[1, 2, 3] = 0  # one voxel differs, given along axis 2 in two batches
    along2 = np.moveaxis(b, 2, 0)
    votes.add(1, axis=2, start=0, labels=along2[:2])
    votes.add(1, axis=2, start=2, labels=along2[2:])
    votes.add(2, axis=1, start=0, labels=np.moveaxis(a, 1, 0))
    assert np.argwhere(votes.differs).tolist() == [[1, 2, 3]]
    assert (votes.first == a).all()


def test_measure_labels_volume_and_contact_by_hand():
    labels = np.zeros((10, 12, 8), np.uint8)
    labels[2:5, 3:7, 0:2] = 1  # 3 x 4 x 2 = 24 voxels, 12 of them on the first face of axis 2
    volume, contact = measure_labels(labels, (2.0, 1.0, 3.0), {"background": 0, "brain": 1}, face_names(np.eye(3)))
    assert volume == {"brain": pytest.approx(24 * 6 / 1000, abs=0.05)}
    assert contact == {"inferior": pytest.approx(12 * 2.0 / 100)}  # LPS +z: the first slice is the inferior face


def test_face_names_follow_the_direction():
    flipped = np.diag([-1.0, 1.0, -1.0])  # index axis 0 runs to the right, axis 2 downwards
    assert face_names(flipped) == ["left", "right", "anterior", "posterior", "superior", "inferior"]
    permuted = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float)  # axis 0 along P, axis 1 along S, axis 2 along L
    assert face_names(permuted) == ["anterior", "posterior", "inferior", "superior", "right", "left"]


def test_measure_frame_by_hand():
    volume = np.zeros((20, 20, 20), np.float32)
    volume[2:18, 2:18, 2:18] = 0.5  # the object
    probs = np.zeros((2, 20, 20, 20), np.uint16)
    probs[0] = 3 * 255
    mask = np.zeros((20, 20, 20), bool)
    mask[5:8, 5:8, 5:8] = True  # 27 voxels
    mask[12:14, 12:14, 12:14] = True  # 8 voxels, another piece
    probs[0][mask], probs[1][mask] = 0, 3 * 255
    probs[0, 5, 5, 5], probs[1, 5, 5, 5] = 300, 400  # foreground, but only 57 % sure: uncertain
    probs[0, 0, 0, 0], probs[1, 0, 0, 0] = 500, 200  # background, 71 % sure: uncertain too
    box = (slice(None),) * 3
    votes = AxisVotes((20, 20, 20), n_axes=3)
    votes.differs[5:8, 5, 5] = True
    votes.differs[15, 2, 2] = True  # 4 city-block voxels or more from the mask: not at stake
    votes.differs[10, 12, 12] = True  # 2 voxels (3 mm) from the second piece: at stake
    f = measure_frame(volume, probs, box, votes, (1.5, 1.5, 1.5))
    assert f.mask_voxels == 35
    assert f.uncertain == pytest.approx(1 / 35, abs=1e-4)  # (0, 0, 0) lies 15 voxels from the mask
    assert f.disagreement == pytest.approx(4 / 35, abs=1e-4)
    assert f.outside_largest == pytest.approx(8 / 35, abs=1e-4)
    assert f.pieces == 2
    assert f.object_ml == pytest.approx(16**3 * 1.5**3 / 1000, abs=0.1)
    # the largest piece's centre (6, 6, 6) in the object's extent 2..17
    assert f.centre == pytest.approx(((6 - 2) / 15,) * 3, abs=1e-3)
    assert f.mask_quantiles == [0.5] * 19 and f.object_quantiles == [0.5] * 19


def test_doubt_counts_near_the_delivered_mask_only():
    """The post-processed mask decides where doubt counts: a dropped piece's doubt does not, and the shares are of
    the delivered mask's voxels."""
    volume = np.full((20, 20, 20), 0.5, np.float32)
    probs = np.zeros((2, 20, 20, 20), np.uint16)
    probs[0] = 3 * 255
    probs[:, 2:6, 2:6, 2:6] = [[[[0]]], [[[3 * 255]]]]  # a piece of 64 voxels, kept
    probs[:, 14:17, 14:17, 14:17] = [[[[300]]], [[[400]]]]  # a piece of 27 voxels, unsure, dropped
    votes = AxisVotes((20, 20, 20), n_axes=3)
    votes.differs[14:17, 14:17, 14:17] = True
    votes.differs[2, 2, 2] = True
    delivered = np.zeros((20, 20, 20), bool)
    delivered[2:6, 2:6, 2:6] = True
    f = measure_frame(volume, probs, (slice(None),) * 3, votes, (1.5, 1.5, 1.5), delivered=delivered)
    assert (f.mask_voxels, f.disagreement, f.uncertain) == (91, round(1 / 64, 4), 0.0)
    raw = measure_frame(volume, probs, (slice(None),) * 3, votes, (1.5, 1.5, 1.5))  # the raw mask delivered
    assert (raw.disagreement, raw.uncertain) == (round(28 / 91, 4), round(27 / 91, 4))


def test_at_stake_is_the_city_block_neighbourhood_of_stake_mm():
    from scipy import ndimage

    from medfcn.inference.quality import STAKE_MM, at_stake

    rng = np.random.default_rng(4)
    mask = rng.random((24, 20, 16)) > 0.995
    for spacing, steps in (((1.5, 1.5, 1.5), 2), ((1.0, 1.0, 1.0), 3)):
        assert steps == round(STAKE_MM / min(spacing))
        distance = ndimage.distance_transform_cdt(~mask, metric="taxicab")  # an independent distance
        assert (at_stake(mask, spacing) == (distance <= steps)).all()
    assert not at_stake(np.zeros((4, 4, 4), bool), (1.5, 1.5, 1.5)).any()
    # an anisotropic frame: 3 mm is 6 voxels along a 0.5 mm axis and 1 (rounded up from 0.6) along a 5 mm one
    point = np.zeros((15, 15, 7), bool)
    point[7, 7, 3] = True
    reach = at_stake(point, (0.5, 1.0, 5.0))
    assert [int(np.count_nonzero(reach[:, 7, 3])), int(np.count_nonzero(reach[7, :, 3])), int(reach[7, 7].sum())] == [
        13,
        7,
        3,
    ]
    distance = ndimage.distance_transform_cdt(~point, metric="taxicab")
    assert (reach <= (distance <= 6)).all() and reach[10, 8, 4]  # 3 + 1 + 1 steps, each axis within its reach


def test_intensity_quantiles_match_numpy():
    values = np.random.default_rng(0).normal(size=1000)
    assert intensity_quantiles(values) == pytest.approx(np.quantile(values, np.linspace(0.05, 0.95, 19)), abs=1e-4)


def test_segment_and_check_matches_segment_and_an_independent_vote(segmenter):
    """The labels are those of ``segment``; the disagreement is that of each direction's labels recomputed from
    the engine's probabilities one direction at a time (weighted as the pipeline weights them)."""
    from scipy import ndimage

    from medfcn.inference.frame import foreground_box
    from medfcn.inference.postprocess import argmax_classes

    scan = Scan(head_volume((30, 34, 22), seed=3), (1.5, 1.5, 1.5), (0.0, 0.0, 0.0), np.eye(3))
    found = segmenter.segment_and_check(scan)
    assert (found.labels == segmenter.segment(scan)).all()
    card = segmenter.model.card
    volume = segmenter.normalise(segmenter.to_frame(scan))
    box = foreground_box(volume)
    inner = torch.from_numpy(np.ascontiguousarray(volume[box]))
    weights = np.asarray(card.class_weights or (1.0,) * len(card.labels), np.float32)
    per_axis = []
    for axis in card.slice_axes:
        probs = np.zeros((len(card.labels), *inner.shape), np.float32)
        view = np.moveaxis(probs, axis + 1, 1)
        for start, p in segmenter.engine.iter_probabilities(inner, axis=axis, context=card.context):
            view[:, start : start + p.shape[0]] = p.numpy().swapaxes(0, 1)
        per_axis.append(argmax_classes(probs * (weights / weights.max())[:, None, None, None]))
    differs = np.zeros(inner.shape, bool)
    for labels in per_axis[1:]:
        differs |= labels != per_axis[0]
    probs = segmenter.postprocess(segmenter.probabilities(volume, box=box))
    delivered = argmax_classes(probs[(slice(None), *box)]) > 0
    near = ndimage.distance_transform_cdt(~delivered, metric="taxicab") <= 2  # within 3 mm on the 1.5 mm frame
    f = found.evidence.frame
    assert delivered.any() and f.mask_voxels
    assert f.disagreement == pytest.approx((differs & near).sum() / delivered.sum(), abs=2e-3)
    assert found.evidence.volume_ml["brain"] == pytest.approx(found.labels.astype(bool).sum() * 1.5**3 / 1000, abs=0.05)
    assert isinstance(found.verdict, Verdict) and 0.0 <= found.verdict.score <= 1.0


def _frame(**kw) -> FrameEvidence:
    base = dict(
        mask_voxels=1000,
        disagreement=0.02,
        uncertain=0.05,
        outside_largest=0.0,
        pieces=1,
        centre=(0.5, 0.5, 0.6),
        object_ml=4000.0,
        object_quantiles=[0.1 * i / 2 for i in range(19)],
        mask_quantiles=[0.3] * 19,
    )
    return FrameEvidence(**{**base, **kw})


EXPECT = Expectations(
    volume_ml={"brain": (900.0, 2100.0)},
    centre=((0.3, 0.7), (0.3, 0.7), (0.4, 0.8)),
    object_quantiles=tuple(0.1 * i / 2 for i in range(19)),
    mask_quantiles=(0.3,) * 19,
    profile_distance=0.05,
    disagreement=0.08,
    uncertain=0.12,
    outside_largest=0.01,
)


def test_a_case_like_the_training_scans_is_trusted():
    v = judge(Evidence(_frame(), {"brain": 1400.0}), EXPECT)
    assert (v.review, v.score, v.reasons) == (False, 1.0, [])


def test_volume_outside_the_training_range_flags_with_its_numbers():
    v = judge(Evidence(_frame(), {"brain": 197.0}), EXPECT)
    assert v.review and v.score < REVIEW_BELOW
    assert v.reasons == ["brain 197 mL, outside the 900-2,100 mL this model was trained on"]


def test_foreign_intensity_profile_says_not_a_head_first():
    frame = _frame(object_quantiles=[0.9] * 19, mask_quantiles=[0.05] * 19)
    v = judge(Evidence(frame, {"brain": 3200.0}), EXPECT)
    assert v.review and v.reasons[0].startswith("not a head MRI like the training scans")
    assert any("3,200 mL" in r for r in v.reasons)


def test_touching_the_edge_is_a_note_that_never_flags_alone():
    v = judge(Evidence(_frame(), {"brain": 1400.0}, {"inferior": 500.0, "superior": 2.0}), EXPECT)
    assert not v.review and v.score == pytest.approx(0.7)
    assert v.reasons == [
        "the mask touches the edge of the field of view (inferior: 500 cm2): the structure may continue beyond the scan"
    ]


def test_two_half_way_risks_flag_together_but_not_alone():
    one = judge(Evidence(_frame(disagreement=0.08 + 0.07), {"brain": 1400.0}), EXPECT)  # risk 0.4375
    both = judge(Evidence(_frame(disagreement=0.15, uncertain=0.12 + 0.1), {"brain": 1400.0}), EXPECT)
    assert not one.review and both.review
    assert both.score == pytest.approx((1 - 0.4375) * (1 - 0.5 * 0.1 / 0.12), abs=1e-3)


def test_an_empty_mask_scores_zero():
    v = judge(Evidence(_frame(mask_voxels=0), {"brain": 0.0}), EXPECT)
    assert (v.review, v.score) == (True, 0.0) and "empty" in v.reasons[0]


def test_without_expectations_the_model_independent_checks_use_the_defaults():
    v = judge(Evidence(_frame(disagreement=3 * DEFAULT_LEVELS["disagreement"]), {"brain": 50.0}), Expectations())
    assert v.review and set(v.risks) == {"disagreement", "uncertain", "pieces", "levels"}  # no volume check: no range


def test_little_contrast_inside_the_mask_flags_another_modality():
    import dataclasses

    trained = dataclasses.replace(EXPECT, mask_spread=0.36)  # PD, the flattest of the bundled model's inputs
    ct = [0.529 + 0.0015 * i for i in range(19)]  # a CT-like head's brain, measured: spread 0.027
    v = judge(Evidence(_frame(mask_quantiles=ct), {"brain": 1400.0}), trained)
    assert v.review and v.reasons[0].startswith("little contrast inside the mask: its intensities span 0.03")
    assert v.risks["contrast"] == pytest.approx(min(1.0, 0.5 * (1 - 0.027 / 0.36 - 0.5) / 0.25), abs=1e-3)
    pd = [0.4 + 0.3 * i / 18 for i in range(19)]  # spread 0.30, as a PD rendering's: no risk
    assert judge(Evidence(_frame(mask_quantiles=pd), {"brain": 1400.0}), trained).risks["contrast"] == 0.0
    assert "contrast" not in judge(Evidence(_frame(mask_quantiles=ct), {"brain": 1400.0}), EXPECT).risks  # no level


def test_a_small_mask_is_profiled_whole_and_its_spread_not_judged():
    """A 27-voxel lesion: a sample of every 2nd voxel held one value (spread 0: 'little contrast, CT?', score 0)."""
    import dataclasses

    from medfcn.inference.quality import PROFILE_VOXELS

    rng = np.random.default_rng(2)
    volume = rng.uniform(0.1, 0.9, (20, 20, 20)).astype(np.float32)
    probs = np.zeros((2, 20, 20, 20), np.uint16)
    probs[0] = 3 * 255
    probs[:, 5:8, 5:8, 5:8] = [[[[0]]], [[[3 * 255]]]]
    f = measure_frame(volume, probs, (slice(None),) * 3, None, (1.5, 1.5, 1.5))
    inside = volume[5:8, 5:8, 5:8].ravel()
    assert f.mask_quantiles == intensity_quantiles(inside)  # every voxel, not 1 in 8
    assert f.mask_voxels < PROFILE_VOXELS
    trained = dataclasses.replace(EXPECT, mask_spread=0.36)
    flat = _frame(mask_voxels=27, mask_quantiles=[0.64] * 19)
    assert "contrast" not in judge(Evidence(flat, {"brain": 1400.0}), trained).risks
    runs = [(Evidence(_frame(mask_quantiles=[0.3 + 0.02 * i for i in range(19)]), {"brain": 1e3}), {"brain": 1e3})]
    runs.append((Evidence(flat, {"brain": 1e3}), {"brain": 1e3}))  # a tiny training mask does not set the level
    assert record_expectations(runs, "").mask_spread == 0.36


def test_few_distinct_intensities_flag_a_phantom_or_label_map_as_not_a_scan():
    from medfcn.inference.verdict import FLAT_FLAG, flat_steps

    phantom = [0.0] + [0.2] * 16 + [1.0, 1.0]  # a Shepp-Logan phantom's object profile, measured
    assert flat_steps(phantom) == 16
    v = judge(Evidence(_frame(object_quantiles=phantom), {"brain": 1400.0}), Expectations())
    assert v.review and v.reasons[0].startswith("not a scan like the training scans: its intensities take few")
    assert "16 of the 18 steps" in v.reasons[0]
    almost = [0.05 * i for i in range(19 - FLAT_FLAG)] + [0.5] * FLAT_FLAG  # FLAT_FLAG - 1 flat steps: not alone
    assert not judge(Evidence(_frame(object_quantiles=almost), {"brain": 1400.0}), Expectations()).review
    real = judge(Evidence(_frame(), {"brain": 1400.0}), Expectations())  # strictly rising: no risk at all
    assert real.risks["levels"] == 0.0 and not real.review


def test_record_expectations_from_runs():
    runs = [
        (Evidence(_frame(disagreement=0.03, centre=(0.5, 0.4, 0.6)), {"brain": 1200.0}), {"brain": 1250.0}),
        (
            Evidence(_frame(disagreement=0.06, centre=(0.45, 0.5, 0.7), uncertain=0.1), {"brain": 1500.0}),
            {"brain": 1500.0},
        ),
    ]
    e = record_expectations(runs, "two runs")
    assert e.volume_ml == {"brain": (750.0, 2100.0)}  # 0.6 x 1250, 1.4 x 1500
    assert e.disagreement == 0.06 and e.uncertain == 0.1
    assert e.mask_spread == 0.0  # both profiles flat at 0.3
    assert e.centre[2] == pytest.approx((0.45, 0.85))
    assert e.profile_distance == 0.0 and e.source == "two runs"
    assert Expectations.from_dict(e.to_dict()) == e


def test_record_expectations_of_a_model_that_found_nothing_records_none():
    runs = [(Evidence(_frame(mask_voxels=0), {"brain": 0.0}), {"brain": 1000.0})]  # was: ValueError from max()
    assert record_expectations(runs, "empty") == Expectations(source="empty")


def test_a_tiny_risk_nudges_the_score_without_a_reason():
    v = judge(Evidence(_frame(outside_largest=0.012), {"brain": 1400.0}), EXPECT)  # risk 0.5 x 0.002 / 0.1 = 0.01
    assert v.reasons == [] and v.score == pytest.approx(0.99) and not v.review
    v = judge(Evidence(_frame(outside_largest=0.05, pieces=3), {"brain": 1400.0}), EXPECT)  # risk 0.2
    assert v.reasons == [
        "5 % of the raw mask lies outside its largest piece (3 of over 1 % of it; at most 1 % on the training scans)"
    ]


def test_the_uncertainty_map_is_the_unsure_and_disagreeing_voxels_on_the_scan_grid(segmenter):
    """``segment_and_check(uncertainty=True)``: on a scan already on the model's frame spacing (only flips apart),
    the map counts exactly the voxels recomputed here one direction at a time: the winning class under 75 % of the
    summed probabilities, or the directions' labels differing; none in the air outside the engine's box."""
    from medfcn.inference.frame import foreground_box
    from medfcn.inference.postprocess import argmax_classes

    card = segmenter.model.card
    scan = Scan(head_volume((30, 34, 22), seed=4), tuple(card.spacing), (0.0, 0.0, 0.0), np.eye(3))
    found = segmenter.segment_and_check(scan, uncertainty=True)
    assert segmenter.segment_and_check(scan).uncertain is None  # only on request
    assert found.uncertain.shape == scan.shape and set(np.unique(found.uncertain)) <= {0, 1}
    volume = segmenter.normalise(segmenter.to_frame(scan))
    assert volume.shape == scan.shape  # same grid, flips apart: the map's voxel count is the frame's
    box = foreground_box(volume)
    inner = torch.from_numpy(np.ascontiguousarray(volume[box]))
    weights = np.asarray(card.class_weights or (1.0,) * len(card.labels), np.float32)
    total = np.zeros((len(card.labels), *inner.shape), np.float32)
    per_axis = []
    for axis in card.slice_axes:
        probs = np.zeros_like(total)
        view = np.moveaxis(probs, axis + 1, 1)
        for start, p in segmenter.engine.iter_probabilities(inner, axis=axis, context=card.context):
            view[:, start : start + p.shape[0]] = p.numpy().swapaxes(0, 1)
        probs *= (255 * weights / weights.max())[:, None, None, None]
        per_axis.append(argmax_classes(probs))
        total += probs
    unsure = total.max(axis=0) < 0.75 * total.sum(axis=0)
    for labels in per_axis[1:]:
        unsure |= labels != per_axis[0]
    assert unsure.any() and not unsure.all()  # a test that could fail either way
    assert int(found.uncertain.sum()) == pytest.approx(int(unsure.sum()), abs=2 + 0.01 * unsure.sum())


@pytest.mark.parametrize("levels", [255, 63])
def test_a_real_head_stored_in_few_grey_levels_has_no_flat_profile(levels):
    """An 8-bit or even 6-bit copy of the sample head (256 or 64 grey levels) is a scan, not a drawing: its object's
    profile has no flat step, so the few-intensities check takes nothing off (16 levels would: measured 11 flat)."""
    from pathlib import Path

    import nibabel as nib

    from medfcn.inference.frame import normalise_intensity, to_model_frame
    from medfcn.inference.quality import object_mask
    from medfcn.inference.verdict import flat_steps
    from medfcn.model.checkpoint import load_model

    img = nib.load(Path(__file__).resolve().parents[2] / "sample_data" / "images" / "colin27.nii.gz")
    a = np.asanyarray(img.dataobj).astype(np.float32)
    coarse = np.round(a / np.percentile(a, 99.9) * levels).clip(0, levels)
    card = load_model(None).card
    scan = Scan(coarse, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    volume = normalise_intensity(
        to_model_frame(scan, card.spacing, orientation=card.orientation).volume, card.normalisation
    )
    obj = object_mask(volume)
    assert flat_steps(intensity_quantiles(volume[::2, ::2, ::2][obj[::2, ::2, ::2]])) == 0
