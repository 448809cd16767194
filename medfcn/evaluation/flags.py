"""How well the quality verdicts of a batch matched its Dice, once references exist.

A batch's ``manifest.json`` gives each segmented case a verdict (``quality``: review, score, reasons;
:mod:`medfcn.inference.verdict`; read by :func:`medfcn.batch.manifest.read_verdicts`); :func:`flag_agreement`
counts, over the cases scored, the flagged and unflagged ones among the poor (Dice < :data:`POOR`), the middling and
the good (Dice >= :data:`GOOD`) ones, and the rank correlation of score and Dice (Spearman, from scipy).

>>> a = flag_agreement({"a": 0.97, "b": 0.80, "c": 0.96}, {"a": {"review": False, "score": 0.9},
...     "b": {"review": True, "score": 0.2}, "c": {"review": True, "score": 0.4}})
>>> a.line()
'quality flags: 1 of 1 cases with Dice < 0.90 flagged; 1 of 2 with Dice >= 0.95 flagged'

The rank correlation is given from :data:`MIN_RANKED` cases on (over 3 cases it is one of four values, and the
README's first command printed "-1.00" for the sample's three good cases).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["POOR", "GOOD", "MIN_RANKED", "FlagAgreement", "flag_agreement"]

POOR = 0.90  # Dice below this: a case that should have been flagged
GOOD = 0.95  # Dice at or above this: a case that should not have been
MIN_RANKED = 5  # fewest cases for a rank correlation of score and Dice


@dataclass(frozen=True)
class FlagAgreement:
    """Counts over the scored cases that have a verdict: ``poor`` / ``middling`` / ``good`` cases and how many of
    each were flagged; ``spearman``: rank correlation of score and Dice over all of them (None for fewer than
    :data:`MIN_RANKED` cases or no spread)."""

    poor: int
    poor_flagged: int
    middling: int
    middling_flagged: int
    good: int
    good_flagged: int
    spearman: float | None

    def line(self) -> str:
        cases = self.poor + self.middling + self.good  # every case scored falls in one of the three
        rho = "" if self.spearman is None else f"; Spearman (score, Dice) {self.spearman:.2f} over {cases} cases"
        return (
            f"quality flags: {self.poor_flagged} of {self.poor} cases with Dice < {POOR:.2f} flagged; "
            f"{self.good_flagged} of {self.good} with Dice >= {GOOD:.2f} flagged{rho}"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "poor_below": POOR, "good_from": GOOD}


def flag_agreement(dice: dict[str, float], verdicts: dict[str, dict]) -> FlagAgreement | None:
    """The agreement over cases in both ``dice`` ({case: mean Dice}) and ``verdicts`` ({case: quality}); None if
    no case has both."""
    cases = [c for c in dice if c in verdicts]
    if not cases:
        return None
    flagged = {c: bool(verdicts[c].get("review")) for c in cases}
    poor = [c for c in cases if dice[c] < POOR]
    good = [c for c in cases if dice[c] >= GOOD]
    middling = [c for c in cases if POOR <= dice[c] < GOOD]
    rho = None
    scores = [float(verdicts[c].get("score", 0.0)) for c in cases]
    values = [dice[c] for c in cases]
    if len(cases) >= MIN_RANKED and len(set(scores)) > 1 and len(set(values)) > 1:
        from scipy.stats import spearmanr

        rho = round(float(spearmanr(scores, values).statistic), 4)
    return FlagAgreement(
        poor=len(poor),
        poor_flagged=sum(flagged[c] for c in poor),
        middling=len(middling),
        middling_flagged=sum(flagged[c] for c in middling),
        good=len(good),
        good_flagged=sum(flagged[c] for c in good),
        spearman=rho,
    )
