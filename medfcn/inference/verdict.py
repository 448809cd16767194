"""A quality verdict for one segmentation: should a person check it, how trustworthy it is, and why, in words.

:func:`judge` turns the :class:`~medfcn.inference.quality.Evidence` of a case and the model's
:class:`~medfcn.model.expectations.Expectations` into a :class:`Verdict`. Each check gives a risk from 0 (as on the
model's own training scans) to 1; a check reaches 0.5 at its flag level, so any one check past its flag level
puts the case up for review, and so do several that are each half-way there:

    score = product over checks of (1 - risk);  review = score < 0.5

| check | risk 0 up to | flagged from (risk 0.5) | needs expectations |
|---|---|---|---|
| slice directions disagree near the mask (share of the mask) | the model's own training maximum | 2x that | no |
| uncertain near the mask (share of the mask) | the model's own training maximum | 2x that | no |
| little contrast in a mask of 1,000 voxels or more (spread / training's least) | 0.5 | 0.25 | yes |
| few distinct intensities (flat steps of the object's profile) | :data:`FLAT_OK` of 18 | :data:`FLAT_FLAG` of 18 | no |
| raw mask outside its largest piece | the training maximum | + 0.10 | no |
| a label's volume | inside the training range (widened) | just outside it | yes |
| intensity profile's distance from the training inputs' | the training maximum | 2x that | yes |
| the mask's centre in the object's box | inside the training range (widened) | well outside | yes |
| the mask touches the field of view's edge | (a note: risk at most 0.3, never flags alone) | | no |

"Near the mask" is inside the delivered mask or within 3 mm of it (:func:`medfcn.inference.quality.at_stake`).
A real scan's intensities vary from voxel to voxel, so the 19 quantiles of its object's intensities all differ; a
phantom, a label map or a drawing given as a scan has a few flat levels, and most of its quantiles repeat (a
Shepp-Logan phantom: 16 of the 18 steps between them are flat).

Without expectations in the card (older models, :data:`DEFAULT_LEVELS`), the first three use the levels measured on
the bundled model's training data. An empty mask has score 0.

>>> from medfcn.inference.quality import Evidence, FrameEvidence
>>> profile = [q / 20 for q in range(19)]
>>> frame = FrameEvidence(1000, 0.2, 0.1, 0.0, 1, None, 4000.0, profile, profile)
>>> v = judge(Evidence(frame, {"brain": 1400.0}), Expectations(disagreement=0.05, uncertain=0.3))
>>> v.review, v.reasons[0]
(True, 'the three slice directions disagree on a volume 20 % the size of the mask (at most 5 % on the training scans)')
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medfcn.inference.quality import PROFILE_VOXELS, Evidence, mask_spread
from medfcn.model.expectations import Expectations

__all__ = ["Verdict", "DEFAULT_LEVELS", "REVIEW_BELOW", "judge", "flat_steps"]

REVIEW_BELOW = 0.5  # a score under this puts the case up for review
NOTE_RISK = 0.3  # the most a note (touching the field of view) takes off
FLAT_OK, FLAT_FLAG = 3, 9  # flat steps (of 18) between the object's intensity quantiles: risk 0 up to, 0.5 at
SAY_FROM = 0.05  # a check's reason is given from this risk on (below, it only nudges the score)

# Levels of the model-independent checks for a card without its own (the bundled model's, on its training data).
DEFAULT_LEVELS = {"disagreement": 0.17, "uncertain": 0.18, "outside_largest": 0.0}


@dataclass(frozen=True)
class Verdict:
    """``review``: a person should check this case; ``score``: 0..1, higher is more trustworthy; ``reasons``: why,
    in words with numbers (also for a case not up for review, when something lowered its score)."""

    review: bool
    score: float
    reasons: list[str] = field(default_factory=list)
    risks: dict[str, float] = field(default_factory=dict)  # each check's risk, for benchmarks and the report

    def to_dict(self) -> dict:
        """The manifest's ``quality`` entry."""
        return {"review": self.review, "score": self.score, "reasons": list(self.reasons)}

    def text(self) -> str:
        """One paragraph for a person: whether to check the result, its score, and the reasons."""
        head = "Check this result" if self.review else "No reason to doubt this result"
        reasons = "".join(f"\n- {r}" for r in self.reasons)
        return f"{head} (quality score {self.score:.2f}){':' if reasons else '.'}{reasons}"

    @classmethod
    def from_dict(cls, data: dict | None) -> Verdict | None:
        if not isinstance(data, dict) or "score" not in data:
            return None
        return cls(bool(data.get("review")), float(data["score"]), [str(r) for r in data.get("reasons", [])])


def _ramp(value: float, ok: float, flag: float) -> float:
    """0 up to ``ok``, 0.5 at ``flag``, 1 at twice as far; linear between."""
    if value <= ok:
        return 0.0
    return float(min(1.0, 0.5 * (value - ok) / max(flag - ok, 1e-9)))


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %" if x >= 0.01 else f"{100 * x:.1f} %"


def _of_mask(x: float) -> str:
    """A volume relative to the mask's, in words (it may lie partly outside the mask): ``a volume 14 % the size of
    the mask``, or ``a volume 3.2 times the mask's``."""
    return f"a volume {_pct(x)} the size of the mask" if x < 1 else f"a volume {x:,.1f} times the mask's"


def judge(evidence: Evidence, expectations: Expectations, *, axes: int = 3) -> Verdict:
    """The verdict on one case (see the module docstring for the checks and their levels)."""
    f = evidence.frame
    risks: dict[str, float] = {}
    reasons: list[str] = []
    if f.mask_voxels == 0 or not any(v > 0 for v in evidence.volume_ml.values()):
        names = ", ".join(evidence.volume_ml) or "structure"
        return Verdict(True, 0.0, [f"no {names} found: the label map is empty (not a scan this model was made for?)"])
    e = expectations

    def level(name: str) -> float:
        value = getattr(e, name)
        return float(value) if value is not None else DEFAULT_LEVELS[name]

    if f.disagreement is not None:
        ok = level("disagreement")
        risks["disagreement"] = _ramp(f.disagreement, ok, 2 * ok)
        if risks["disagreement"] >= SAY_FROM:
            reasons.append(
                f"the {'three ' if axes == 3 else ''}slice directions disagree on {_of_mask(f.disagreement)} "
                f"(at most {_pct(ok)} on the training scans)"
            )
    ok = level("uncertain")
    risks["uncertain"] = _ramp(f.uncertain, ok, 2 * ok)
    if risks["uncertain"] >= SAY_FROM:
        reasons.append(
            f"uncertain boundary: the model is unsure of {_of_mask(f.uncertain)} "
            f"(at most {_pct(ok)} on the training scans)"
        )
    ok = level("outside_largest")
    risks["pieces"] = _ramp(f.outside_largest, ok, ok + 0.10)
    if risks["pieces"] >= SAY_FROM:
        reasons.append(
            f"{_pct(f.outside_largest)} of the raw mask lies outside its largest piece ({f.pieces} of over 1 % "
            f"of it; at most {_pct(ok)} on the training scans)"
        )
    flats = flat_steps(f.object_quantiles)
    risks["levels"] = _ramp(flats, FLAT_OK, FLAT_FLAG)
    if risks["levels"] >= SAY_FROM:
        reasons.insert(
            0,
            f"not a scan like the training scans: its intensities take few distinct values ({flats} of the "
            f"{len(f.object_quantiles) - 1} steps of its intensity profile are flat): a phantom, a label map or a "
            "drawing?",
        )
    for name, ml in evidence.volume_ml.items():
        if name in e.volume_ml:
            lo, hi = e.volume_ml[name]
            excess = lo / max(ml, 1e-3) - 1 if ml < lo else (ml / hi - 1 if ml > hi else 0.0)
            risks[f"volume:{name}"] = 0.0 if not excess else float(min(1.0, 0.5 + excess))
            if excess:
                reasons.append(f"{name} {ml:,.0f} mL, outside the {lo:,.0f}-{hi:,.0f} mL this model was trained on")
    if e.object_quantiles and e.profile_distance is not None:
        distance = _profile_distance(f, e)
        ok = e.profile_distance
        risks["profile"] = _ramp(distance, ok, 2 * ok)
        if risks["profile"] >= 0.5:
            reasons.insert(
                0,
                f"not a head MRI like the training scans: its intensity profile differs by {distance:.2f} "
                f"(at most {ok:.2f} among the training scans): another modality or body part?",
            )
        elif risks["profile"] >= SAY_FROM:
            reasons.append(f"unusual intensity profile: {distance:.2f} from the training scans' (at most {ok:.2f})")
    if e.mask_spread and f.mask_voxels >= PROFILE_VOXELS:  # a few voxels' spread says nothing of the contrast
        spread = mask_spread(f.mask_quantiles)
        risks["contrast"] = _ramp(1.0 - spread / e.mask_spread, 0.5, 0.75)
        if risks["contrast"] >= SAY_FROM:
            reasons.insert(
                0,
                f"little contrast inside the mask: its intensities span {spread:.2f} of the scan's range (at least "
                f"{e.mask_spread:.2f} on the training scans): another modality (CT?) or an unknown contrast",
            )
    if e.centre and f.centre is not None:
        off = max(max(lo - c, c - hi, 0.0) for c, (lo, hi) in zip(f.centre, e.centre, strict=True))
        risks["position"] = float(min(1.0, 4 * off))  # 0.125 of the box outside the range: flagged
        if risks["position"] >= SAY_FROM:
            where = ", ".join(f"{c:.2f}" for c in f.centre)
            reasons.append(f"the mask lies in an unusual place: centre at ({where}) of the scan's object along R, A, S")
    if evidence.contact_cm2:
        face, cm2 = max(evidence.contact_cm2.items(), key=lambda kv: kv[1])
        risks["edge"] = float(min(NOTE_RISK, cm2 / 100.0))
        if cm2 >= 1.0:
            reasons.append(
                f"the mask touches the edge of the field of view ({face}: {cm2:.0f} cm2): the structure may "
                "continue beyond the scan"
            )
    score = float(np.prod([1.0 - r for r in risks.values()]))
    score = round(score, 3)
    return Verdict(score < REVIEW_BELOW, score, reasons, {k: round(v, 3) for k, v in risks.items()})


def flat_steps(quantiles: list[float]) -> int:
    """How many steps between neighbouring ``quantiles`` (recorded to 4 decimals) are flat.

    >>> flat_steps([0.2, 0.2, 0.2, 0.5, 1.0, 1.0])
    3
    """
    return int(np.count_nonzero(np.diff(np.asarray(quantiles, dtype=float)) < 0.5e-4))


def _profile_distance(f, e: Expectations) -> float:
    """Mean absolute difference of the object's and the mask's intensity quantiles from the training inputs'
    (normalised intensities, 0..1 for the percentile normalisation), the larger of the two."""
    obj = float(np.mean(np.abs(np.subtract(f.object_quantiles, e.object_quantiles))))
    if not e.mask_quantiles:
        return obj
    return max(obj, float(np.mean(np.abs(np.subtract(f.mask_quantiles, e.mask_quantiles)))))
