"""Time and size of each output format for the sample DICOM series (145 x 121 x 90 at 1.5 x 1.5 x 2 mm), written from
its reference brain mask (no model run: the writers are what is measured), and the round trips checked.

    python benchmarks/bench_dicom_outputs.py [--repeat 3]

Prints one line per format: median seconds to write, file size, and whether reading it back gives the mask exactly.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from medfcn.batch.outputs import OutputFormat, output_files, write_outputs
from medfcn.data.reader import read_scan
from medfcn.dicom.refs import SeriesIndex
from medfcn.dicom.rtstruct import read_rtstruct
from medfcn.dicom.seg import Algorithm, read_seg, segments_of

ROOT = Path(__file__).resolve().parents[1]
SERIES = ROOT / "sample_data" / "dicom" / "colin27_dicom"
MASK = ROOT / "sample_data" / "labels" / "colin27_dicom.nii.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scan = read_scan(SERIES)
    labels = np.asarray(read_scan(MASK).array, np.uint8)
    assert not read_scan(MASK).grid.differences(scan.grid), "the sample mask is on the series' grid"
    model = type("M", (), {"card": type("C", (), {"labels": {"background": 0, "brain": 1}, "label_codes": {}})()})
    model.name, model.sha256 = "bench", "0" * 64
    assert segments_of(model.card.labels) and Algorithm()
    index = SeriesIndex([SERIES])
    readers = {OutputFormat.DICOM_SEG: read_seg, OutputFormat.RTSTRUCT: read_rtstruct}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in OutputFormat:
            times = []
            for _ in range(args.repeat):
                files = output_files(tmp, "colin", (fmt,))
                start = time.perf_counter()
                write_outputs(labels, scan, files, model)
                times.append(time.perf_counter() - start)
            path = files[fmt]
            exact = (
                np.array_equal(readers[fmt](path, index).array, labels)
                if fmt in readers
                else np.array_equal(read_scan(path).array, labels)
            )
            print(
                f"{fmt.value:10s} write {statistics.median(times):6.2f} s  {path.stat().st_size / 1e6:6.2f} MB  "
                f"read back exact: {exact}"
            )


if __name__ == "__main__":
    main()
