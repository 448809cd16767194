"""Messages in the viewer's terms: what the command line says with its options, the docks say with their own words.

medfcn's engine names the command-line option a user would change (``--init``, ``--format nifti``); a person in
napari has a dock, a file dialog and a file name instead. :func:`for_viewer` rewrites those phrases, and only
those, so the engine keeps one message per error and the viewer never shows a flag.

>>> for_viewer("a.nii.gz: not a DICOM series; ... (use --format nifti for this case)")
'a.nii.gz: not a DICOM series; ... (save it as .nii.gz instead)'
>>> for_viewer("--init m.safetensors: cannot be fine-tuned: not a medfcn model")
'the start model m.safetensors: cannot be fine-tuned: not a medfcn model'
"""

from __future__ import annotations

import re

__all__ = ["for_viewer"]

_REWRITES = (
    (re.compile(r"\(use --format nifti for this case, or "), "(save it as .nii.gz instead, or "),
    (re.compile(r"\(use --format nifti for this case\)"), "(save it as .nii.gz instead)"),
    (re.compile(r"use --format nifti"), "save it as .nii.gz"),
    (re.compile(r"is the --init model training starts from"), "is the start model"),
    (re.compile(r"^--init "), "the start model "),
    (re.compile(r"--max-minutes"), "Minutes"),
    (re.compile(r"--label-names"), "Label names"),
)


def for_viewer(text: str) -> str:
    """``text`` (an engine message) with its command-line phrases said as the docks say them."""
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return text
