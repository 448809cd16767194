"""How long napari waits to import the plugin's reader hook (called for every path a user opens), against
importing medfcn's full reader (torch and MONAI). Each import in a fresh process; the median of ``--runs``.

    python benchmarks/bench_plugin_import.py --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

MODULES = ("napari_plugin._reader", "napari_plugin._writer", "napari_plugin._sample_data", "medfcn.data.reader")


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace", check=True
        ).stdout
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    for module in MODULES:
        times = [import_seconds(module) for _ in range(runs)]
        print(f"{module:28s} median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f})")


if __name__ == "__main__":
    main()
