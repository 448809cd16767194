"""Record a model's expectations in its card from its training data, keeping its weights bit for bit.

    python benchmarks/support/record_expectations.py --work runs/quality_calibration \
        [--model medfcn/models/default.safetensors] [--out medfcn/models/default.safetensors]

Runs the model on :func:`quality_cases.calibration_cases` (its two training heads, their validation renderings with
three seeds and ROBEX's head in three other contrasts), takes each reference label's volume and the evidence of the
model's own segmentation (:mod:`medfcn.inference.quality`), and writes the card's ``expectations``
(:func:`medfcn.inference.quality.record_expectations`) with :func:`medfcn.model.checkpoint.replace_card`, in the same
rewrite as the card's training record made publishable (:func:`medfcn.training.record.publishable`: no path of the
machine it was trained on). Prints each case's evidence and the expectations.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medfcn.data.reader import read_scan  # noqa: E402
from medfcn.inference.pipeline import Segmenter  # noqa: E402
from medfcn.inference.quality import EVIDENCE_VERSION, Evidence, record_expectations  # noqa: E402
from medfcn.inference.settings import InferenceSettings  # noqa: E402
from medfcn.model.checkpoint import DEFAULT_MODEL_PATH, load_model, replace_card  # noqa: E402
from medfcn.training.record import publishable  # noqa: E402
from support.quality_cases import calibration_cases  # noqa: E402


def label_volume_ml(path: str, names: dict[str, int]) -> dict[str, float]:
    """Each foreground label's volume (mL) in a label file, from its header's voxel size."""
    img = nib.load(path)
    data = np.asanyarray(img.dataobj).astype(np.int64)
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
    return {n: round(float(np.count_nonzero(data == i)) * voxel_ml, 1) for n, i in names.items() if i > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="folder for the calibration renderings")
    parser.add_argument("--model", default=str(DEFAULT_MODEL_PATH))
    parser.add_argument("--out", default=None, help="model file to write (default: --model, replaced)")
    args = parser.parse_args()
    model = load_model(args.model)
    segmenter = Segmenter(model, InferenceSettings(device="cpu"))
    results = []
    cases = calibration_cases(Path(args.work))
    # a rerun with the same model and the same measures reuses the runs
    cache = Path(args.work) / f"evidence_{model.sha256[:12]}_v{EVIDENCE_VERSION}.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    for name, case in cases.items():
        if name not in known:
            found = segmenter.segment_and_check(read_scan(case["image"]))
            volume = label_volume_ml(case["label"], model.card.labels)
            known[name] = {"evidence": found.evidence.to_dict(), "volume": volume}
            cache.write_text(json.dumps(known, indent=1))
        evidence, volume = Evidence.from_dict(known[name]["evidence"]), known[name]["volume"]
        results.append((evidence, volume))
        f = evidence.frame
        print(
            f"{name:36s} ref {volume} pred {evidence.volume_ml} disagree {f.disagreement} "
            f"uncertain {f.uncertain} outside {f.outside_largest} centre {f.centre}",
            flush=True,
        )
    names = ", ".join(cases)
    source = f"benchmarks/support/record_expectations.py on {len(results)} scans of the training data: {names}"
    expectations = record_expectations(results, source)
    card = dataclasses.replace(
        model.card, expectations=expectations.to_dict(), training=publishable(model.card.training or {})
    )
    out = replace_card(args.model, card, args.out or args.model)
    print(json.dumps(expectations.to_dict(), indent=1))
    print("written", out, load_model(out).sha256)


if __name__ == "__main__":
    main()
