"""Coded concepts for labels: what a DICOM SEG segment or an RTSTRUCT ROI *is*, in a terminology a PACS understands.

A model card may carry ``label_codes``: ``{label name: {"category": [value, scheme, meaning], "type": [value,
scheme, meaning]}}`` (DICOM's Segmented Property Category and Type, CID 7150 / CID 7151). A label the card does not
code gets its code from :data:`DEFAULT_CODES` (keyed by label name, lower case), else a code of medfcn's private
scheme ``99MEDFCN`` (DICOM reserves ``99``-prefixed designators for local schemes) that carries the label's name,
so nothing claims a meaning it does not have.

SNOMED CT codes here are those of DICOM PS3.16 (pydicom's code dictionary: ``codes.SCT.Brain``,
``codes.SCT.AnatomicalStructure``).

>>> code_for("brain", {})["type"]
('12738006', 'SCT', 'Brain')
>>> code_for("lesion core", {})["type"]
('lesion core', '99MEDFCN', 'lesion core')
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medfcn.errors import ModelError, UsageError

__all__ = ["Code", "DEFAULT_CODES", "PRIVATE_SCHEME", "code_for", "check_label_codes", "parse_label_codes"]

Code = tuple[str, str, str]  # (code value, coding scheme designator, code meaning)

PRIVATE_SCHEME = "99MEDFCN"
_ANATOMICAL_STRUCTURE: Code = ("91723000", "SCT", "Anatomical Structure")

DEFAULT_CODES: dict[str, dict[str, Code]] = {
    "brain": {"category": _ANATOMICAL_STRUCTURE, "type": ("12738006", "SCT", "Brain")},
}


def code_for(name: str, card_codes: Mapping[str, Any]) -> dict[str, Code]:
    """``{"category": Code, "type": Code}`` of a label: the card's, else :data:`DEFAULT_CODES`, else private."""
    if name in card_codes:
        entry = card_codes[name]
        return {k: tuple(str(v) for v in entry[k]) for k in ("category", "type")}  # type: ignore[misc]
    if name.lower() in DEFAULT_CODES:
        return dict(DEFAULT_CODES[name.lower()])
    private: Code = (name[:16], PRIVATE_SCHEME, name[:64])
    return {"category": ("structure", PRIVATE_SCHEME, "Structure"), "type": private}


def check_label_codes(codes: Mapping[str, Any], labels: Mapping[str, int]) -> dict[str, dict[str, list[str]]]:
    """``codes`` validated against a card's labels and normalised to JSON lists. Raises :class:`ModelError`."""
    out: dict[str, dict[str, list[str]]] = {}
    for name, entry in codes.items():
        if name not in labels or labels[name] == 0:
            raise ModelError(f"label code for {name!r}, which is not a foreground label of the model ({list(labels)})")
        if not isinstance(entry, Mapping) or set(entry) != {"category", "type"}:
            raise ModelError(f"label code for {name!r} must have exactly 'category' and 'type'")
        norm = {}
        for key in ("category", "type"):
            value = entry[key]
            if not isinstance(value, list | tuple) or len(value) != 3 or not all(str(v).strip() for v in value):
                raise ModelError(f"label code {name!r} {key}: give [value, scheme, meaning], got {value!r}")
            if len(str(value[0])) > 16 or len(str(value[2])) > 64:
                raise ModelError(f"label code {name!r} {key}: value <= 16 and meaning <= 64 characters (DICOM)")
            norm[key] = [str(v) for v in value]
        out[name] = norm
    return out


def parse_label_codes(text: str) -> dict[str, Any]:
    """Label codes from a JSON text or a JSON file's path (``medfcn train --label-codes``). Raises UsageError."""
    source = text
    path = Path(text)
    if not text.lstrip().startswith("{"):
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError(f"--label-codes {text}: not JSON and not a readable file ({e.strerror or e})") from None
    try:
        data = json.loads(source)
    except ValueError as e:
        raise UsageError(f"--label-codes: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise UsageError('--label-codes: give {"label": {"category": [...], "type": [...]}}')
    return data
