"""A review queue over a batch's output folder: its judged cases, those flagged for review first.

The queue is read from ``OUT/manifest.json`` (:mod:`medfcn.batch.manifest`), which is never edited: the person's
decisions go in ``OUT/review.json`` beside it, and corrected label maps in ``OUT/corrected/<case>.nii.gz``, never
over the outputs. Both are written atomically, so the queue survives closing the viewer and a rerun of the batch
(whose manifest keeps its case names)::

    {"version": 1, "cases": {"<case>": {"decision": "accepted" | "needs correction" | "corrected",
                                         "corrected": "corrected/<case>.nii.gz" or null, "at": ISO 8601}}}

Order (:func:`read_queue`): flagged cases first, least trustworthy (lowest score) first, then the others by score;
failed cases and cases with no verdict are left out (there is nothing to review). :func:`write_corrected_pairs`
lists the corrected cases as one training set (``OUT/corrected/pairs.csv`` for ``medfcn train --pairs``). Used by
the napari Review queue dock (``napari_plugin/_widgets/queue.py``); a script or another viewer can call the same
functions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from medfcn.batch.manifest import MANIFEST_NAME, Status, now_iso, read_manifest
from medfcn.choices import parse_choice
from medfcn.data.filenames import CORRECTED_FOLDER
from medfcn.data.writer import atomic_write_text
from medfcn.errors import OutputError, UsageError

__all__ = [
    "REVIEW_NAME",
    "CORRECTED_FOLDER",
    "Decision",
    "QueueItem",
    "read_queue",
    "read_decisions",
    "record_decision",
    "corrected_path",
    "write_corrected_pairs",
]

log = logging.getLogger(__name__)

REVIEW_NAME = "review.json"


class Decision(StrEnum):
    """What the person decided about a case."""

    ACCEPTED = "accepted"
    NEEDS_CORRECTION = "needs correction"
    CORRECTED = "corrected"


@dataclass(frozen=True)
class QueueItem:
    """One case of the queue: its files (``label_map`` ``None`` when none was written, ``--skip-flagged``), its
    verdict, and the decision recorded so far (``corrected``: the corrected label map, when one was saved)."""

    case: str
    scan: Path
    label_map: Path | None
    review: bool
    score: float
    reasons: tuple[str, ...]
    decision: Decision | None = None
    corrected: Path | None = None

    def line(self) -> str:
        """One line for a list: ``! 0.12  case  (first reason)  [decision]``."""
        mark = "!" if self.review else " "
        why = f"  ({self.reasons[0]})" if self.reasons else ""
        done = f"  [{self.decision}]" if self.decision else ""
        return f"{mark} {self.score:.2f}  {self.case}{why}{done}"


def _existing(path: str | None, *others: Path) -> Path | None:
    """``path`` if it exists as given, else the first of ``others`` that does (a batch run with relative paths,
    opened from another working folder); ``None`` without a path."""
    if not path:
        return None
    for candidate in (Path(path), *others):
        if candidate.exists():
            return candidate
    return Path(path)


def read_decisions(out_dir: str | Path) -> dict[str, dict]:
    """``{case: {"decision", "corrected", "at"}}`` from ``OUT/review.json`` (empty when there is none). Raises
    :class:`UsageError` for a file that is not a review file (it is never overwritten then)."""
    path = Path(out_dir) / REVIEW_NAME
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        cases = data["cases"]
        if not isinstance(cases, dict):
            raise TypeError("'cases' is not an object")
        return {str(k): dict(v) for k, v in cases.items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: not a medfcn review file ({e}); move it away to start a new review") from None


def read_queue(out_dir: str | Path) -> list[QueueItem]:
    """The judged cases of the batch in ``out_dir``, flagged first, lowest score first, with their decisions.
    Raises :class:`UsageError` when ``out_dir`` holds no readable manifest or a damaged review file."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    decisions = read_decisions(out_dir)
    items = []
    for c in manifest.cases:
        if c.status == Status.FAILED or not c.quality:
            continue
        q, d = c.quality, decisions.get(c.case, {})
        label_map = _existing(c.output, out_dir / Path(c.output or ".").name) if c.output else None
        items.append(
            QueueItem(
                case=c.case,
                scan=_existing(c.input, out_dir.parent / c.input) or Path(c.input),
                label_map=label_map,
                review=bool(q.get("review")),
                score=float(q.get("score", 0.0)),
                reasons=tuple(q.get("reasons") or ()),
                decision=Decision(d["decision"]) if d.get("decision") in set(Decision) else None,
                corrected=out_dir / d["corrected"] if d.get("corrected") else None,
            )
        )
    return sorted(items, key=lambda i: (not i.review, i.score, i.case))


def corrected_path(out_dir: str | Path, case: str) -> Path:
    """``OUT/corrected/<case>.nii.gz``: where a case's corrected label map goes (never over an output). Raises
    :class:`OutputError` for a case name that would put it elsewhere."""
    folder = Path(out_dir) / CORRECTED_FOLDER
    path = folder / f"{case}.nii.gz"
    if path.parent != folder or case in ("", ".", "..") or "/" in case or "\\" in case:
        raise OutputError(f"{case!r}: not a case name a corrected label map can be saved under")
    return path


def record_decision(
    out_dir: str | Path, case: str, decision: Decision | str, corrected: str | Path | None = None
) -> dict[str, dict]:
    """Record ``decision`` for ``case`` in ``OUT/review.json`` (atomically; the manifest is not touched) and return
    every decision. ``corrected``: the corrected label map, a file inside ``OUT`` (required for ``corrected``).
    Raises :class:`UsageError` for a case the batch does not have, a decision not in :class:`Decision`, or a
    corrected file that is missing or outside ``OUT``."""
    out_dir = Path(out_dir)
    decision = parse_choice(Decision, decision, what="decision", error=UsageError)
    if case not in {c.case for c in read_manifest(out_dir).cases}:
        raise UsageError(f"{case!r}: no such case in {out_dir / MANIFEST_NAME}")
    relative = None
    if corrected is not None:
        path = Path(corrected)
        if not path.is_file():
            raise UsageError(f"{path}: the corrected label map does not exist; save it first")
        if not path.resolve().is_relative_to(out_dir.resolve()):
            raise UsageError(f"{path}: a corrected label map belongs inside the output folder {out_dir}")
        relative = path.resolve().relative_to(out_dir.resolve()).as_posix()
    elif decision == Decision.CORRECTED:
        raise UsageError(f"{case}: 'corrected' needs the corrected label map")
    decisions = read_decisions(out_dir)
    decisions[case] = {"decision": str(decision), "corrected": relative, "at": now_iso()}
    text = json.dumps({"version": 1, "cases": decisions}, indent=2) + "\n"
    atomic_write_text(out_dir / REVIEW_NAME, text)
    log.info("%s: %s", case, decision)
    return decisions


def write_corrected_pairs(out_dir: str | Path) -> tuple[Path, int]:
    """``OUT/corrected/pairs.csv``: every case recorded ``corrected``, its scan beside its corrected label map (paths
    relative to the list where they can be), for one fine-tuning run (``medfcn train --pairs LIST --init MODEL``,
    :func:`medfcn.data.pairs.find_pairs`). Returns the list and its number of cases. Raises :class:`UsageError`
    when no case was corrected yet."""
    import csv
    import io
    import os

    out_dir = Path(out_dir)
    done = [i for i in read_queue(out_dir) if i.decision == Decision.CORRECTED and i.corrected]
    done = [i for i in done if i.corrected.is_file()]
    if not done:
        raise UsageError(f"{out_dir}: no case recorded as corrected yet (Save correction records one)")
    path = out_dir / CORRECTED_FOLDER / "pairs.csv"
    text = io.StringIO()
    rows = csv.writer(text, lineterminator="\n")
    rows.writerow(["image", "label", "case"])
    for item in done:
        scan = Path(os.path.relpath(item.scan.resolve(), path.parent.resolve()))
        rows.writerow([scan.as_posix(), item.corrected.name, item.case])
    atomic_write_text(path, text.getvalue())
    return path, len(done)
