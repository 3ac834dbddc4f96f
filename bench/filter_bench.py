"""What XNAT's series import filter costs a delivery: reading the values it tests from every
file to upload, and deciding, against inspecting the same files.

Run from the repository root: `.venv/bin/python bench/filter_bench.py [--files 2000]`
(see bench/README.md). Uses the Siemens-header sessions inspect_bench.py writes under
bench/out/ (written on the first run). The page cache is warm: the figures are CPU cost.
Each case runs `--repeat` times; the best run is shown.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from inspect_bench import generate, warm

from xnat_drop.adapters.dicom.filtervalues import read_values, tag_of
from xnat_drop.adapters.dicom.inspection import inspect
from xnat_drop.core.seriesfilter import SeriesFilter, decide, from_config

FILTERS = {
    "SeriesDescription blacklist": {"mode": "blacklist", "list": "localizer\nscout\n_ADC$"},
    "ImageType + EXISTS whitelist": {
        "mode": "whitelist",
        "list": "[ImageType]\nORIGINAL\\\\PRIMARY\n[SeriesNumber]\nEXISTS",
    },
}


def best(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder: Path = generate("siemens", args.files)
    warm(folder)
    session = inspect(folder, ("P", "S", "E"))
    paths = [f.path for f in session.files if f.is_dicom]
    inspected = best(args.repeat, lambda: inspect(folder, ("P", "S", "E")))
    print(f"{len(paths)} files, Siemens headers (95 KB each), warm cache, best of {args.repeat}")
    print(f"{'case':34} {'seconds':>8} {'files/s':>9} {'vs inspection':>14}")
    print(f"{'inspection (serial)':34} {inspected:8.2f} {len(paths) / inspected:9.0f} {'1.00':>14}")
    for name, contents in FILTERS.items():
        found = from_config("project P", "enabled", json.dumps(contents), tag_of)
        assert found is not None and not found.unpredictable, found
        filters: list[SeriesFilter] = [found]

        def step(filters: list[SeriesFilter] = filters, tags: frozenset[int] = found.tags) -> int:
            values = read_values(folder, paths, tags)
            return sum(not decide(filters, values[p]).keep for p in paths)

        seconds = best(args.repeat, step)
        share = seconds / inspected
        print(f"{name:34} {seconds:8.2f} {len(paths) / seconds:9.0f} {share:14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
