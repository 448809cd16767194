"""The live preview's latency in a real napari viewer: ``bench_annotate.py live`` runs this script in a process of its
own (napari and SimpleITK here; ITK there) on the display it was given.

Colin27 (1 mm) is opened with the medfcn reader; a structure the bundled model never learned (default: both
putamina, AAL 73 and 74) is painted on a fresh layer one whole axial slice at a time (structure and background, one
stroke each, as a brush or fill records it), the Train dock in "painted slices only" mode, starting a new structure
from the bundled model's encoder, with "Live" ticked after the first slice. After each slice the script waits for
the preview that includes it and records: the latency the dock measured (from the stroke to the preview on screen),
the wall time the script saw, and the preview's Dice against the whole structure; last, one slice painted and another
3 s later, while the round of the first runs (the second waits for that round, then for its own). The rounds are
the dock's own (``napari_plugin._widgets._live.ROUND_MINUTES`` of training each).

    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/support/live_session.py --aal PATH --json OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.support.aal import DEFAULT_AAL, SAMPLE_IMAGE, load_aal  # noqa: E402
from benchmarks.support.qt import wait  # noqa: E402


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aal", type=Path, default=DEFAULT_AAL)
    parser.add_argument("--structure", default="73,74")
    parser.add_argument("--slices", type=int, default=4, help="axial slices painted, one after the other")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    import napari

    from medfcn.training.corrections import CorrectionMode
    from napari_plugin._layers import labels_to_display
    from napari_plugin._widgets import _live
    from napari_plugin._widgets._scan_views import new_labels_on_scan
    from napari_plugin._widgets.train import StartChoice

    atlas, _, _ = load_aal(args.aal)
    full = np.isin(atlas, [int(v) for v in args.structure.split(",")]).astype(np.uint8)
    viewer = napari.Viewer(title="medfcn live rounds")
    (image,) = viewer.open(str(SAMPLE_IMAGE), plugin="medfcn")
    truth = labels_to_display(full, image.as_layer_data_tuple()[1])
    axes = [int(a) for a in image.metadata["display_axes"]]
    axis = axes.index(2)  # the display axis of the scan's third (axial) axis
    viewer.dims.order = (axis, *(a for a in range(3) if a != axis))
    held = np.flatnonzero(truth.any(axis=tuple(a for a in range(3) if a != axis)))
    n = args.slices  # evenly spaced over the structure, multiples of 3 (1 mm slices, a 1.5 mm model frame)
    keys = sorted({3 * round((held[0] + (i + 1) * (held[-1] - held[0]) / (n + 1)) / 3) for i in range(n)})
    labels = new_labels_on_scan(viewer, image, name="putamen")
    _, train = viewer.window.add_plugin_dock_widget("medfcn", "Train")
    train.image.value, train.label_layer.value = image, labels
    train.start.value = StartChoice.STRUCTURE.value
    train.label_names.value = "background,putamen"
    train.mode.value = CorrectionMode.PAINTED.value
    rounds = []
    for i, k in enumerate(keys):
        viewer.dims.set_current_step(axis, k)
        index = list(np.nonzero(np.ones(np.delete(truth.shape, axis), bool)))
        index.insert(axis, np.full(index[0].size, k))
        stroke = time.monotonic()
        labels.data_setitem(tuple(index), truth[tuple(index)])  # the whole slice, one stroke
        if i == 0:
            train.live.value = True
        wait(lambda i=i: "putamen_preview" in viewer.layers and train._live.rounds > i and train.worker is None)
        preview = viewer.layers["putamen_preview"]
        rounds.append(
            {
                "round": int(preview.metadata["live_round"]),
                "slices_painted": [int(s) for s in keys[: i + 1]],
                "latency_s": round(train._live.latencies[-1], 2),
                "seen_s": round(time.monotonic() - stroke, 2),
                "preview_dice": round(dice(np.asarray(preview.data), truth), 4),
            }
        )
        print(json.dumps(rounds[-1]), flush=True)
    # a stroke while a round runs waits for it: paint a slice, and another 3 s later, during the round the first began
    extra = [k for k in range(held[0] + 1, held[-1]) if k not in keys][-2:]
    for j, k in enumerate(extra):
        index = list(np.nonzero(np.ones(np.delete(truth.shape, axis), bool)))
        index.insert(axis, np.full(index[0].size, k))
        if j:
            wait(lambda: train.worker is not None)
            time.sleep(3)
        stroke = time.monotonic()
        labels.data_setitem(tuple(index), truth[tuple(index)])
    done = len(keys) + 2
    wait(lambda: train._live.rounds >= done and train.worker is None and train._live._edited_at is None)
    during = {
        "round": int(viewer.layers["putamen_preview"].metadata["live_round"]),
        "slices_painted": [int(s) for s in [*keys, *extra]],
        "latency_s": round(train._live.latencies[-1], 2),
        "seen_s": round(time.monotonic() - stroke, 2),
        "preview_dice": round(dice(np.asarray(viewer.layers["putamen_preview"].data), truth), 4),
        "painted_during_a_round": True,
    }
    print(json.dumps(during), flush=True)
    latencies = [r["latency_s"] for r in rounds]
    result = {
        "what": "live preview latency: a stroke on a whole axial slice -> the preview that includes it (napari)",
        "scan": "colin27 (1 mm)",
        "structure": f"AAL {args.structure} (both putamina)",
        "round_minutes": _live.ROUND_MINUTES,
        "pause_ms": _live.PAUSE_MS,
        "cpus": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "rounds": rounds,
        "stroke_during_a_round": during,
        "latency_s": {"max": max(latencies), "median": float(np.median(latencies)), "min": min(latencies)},
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    viewer.close()


if __name__ == "__main__":
    main()
