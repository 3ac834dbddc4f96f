"""Inspection speed: a bare pydicom header loop against inspect(), serial and parallel.

Run from the repository root: `.venv/bin/python bench/inspect_bench.py` (see bench/README.md).

The first run writes two 5,000-file MR sessions under bench/out/ (kept for later runs), both
256x256 16-bit noise images in nine series:

- `siemens`: headers copied from a real Siemens MR file (nibabel's test data): 138 elements,
  a sequence, private groups and the CSA image and series headers (95 KB of header per file).
  This is what scanner exports look like.
- `samples`: the project's own sample writer (xnat_standin.demo.samples.write_session): 23
  elements, about 1 KB of header. The issue's reference figure (one bare pydicom header read
  at about 4,300 files/s) is for headers like these.

Every file is read once before timing, so the page cache is warm and the figures are CPU cost.
Each case runs `--repeat` times; the best run is shown. CPU seconds include the worker
processes. The machine is shared: the script says so when other processes took CPU meanwhile.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import shutil
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from mr_series import series_sizes
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from xnat_drop.adapters.dicom.inspection import HEADER_TAGS, inspect
from xnat_drop.adapters.workers import InspectionPool
from xnat_drop.core.model import Session
from xnat_standin.demo.samples import SeriesSpec, write_session

OUT = Path(__file__).resolve().parent / "out"
FORMAT = 1  # bump when the generated sessions change: they are then written again
ROWS = COLUMNS = 256
PIXEL_BYTES = ROWS * COLUMNS * 2
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root
# Elements that differ per image; everything else is encoded once per series.
VARYING = (0x00080018, 0x00200013, 0x00200032, 0x00201041)
PIXEL_HEADER = b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", PIXEL_BYTES)
WORKERS_CPU = [0.0]  # CPU seconds of worker processes in all timed runs


@dataclass
class Row:
    case: str
    files: int
    seconds: float
    cpu: float
    cores: int

    def cells(self) -> list[str]:
        rate = self.files / self.seconds
        return [
            self.case,
            str(self.files),
            f"{self.seconds:.3f}",
            f"{rate:,.0f}",
            f"{rate / self.cores:,.0f}",
            f"{self.cpu:.2f}",
            f"{self.files / self.cpu:,.0f}" if self.cpu else "-",
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000, help="files per session")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (best shown)")
    parser.add_argument(
        "--headers",
        choices=["siemens", "samples", "both"],
        default="both",
        help="which generated session(s) to time",
    )
    args = parser.parse_args()
    kinds = ["siemens", "samples"] if args.headers == "both" else [args.headers]
    sessions = {kind: generate(kind, args.files) for kind in kinds}
    for folder in sessions.values():
        warm(folder)

    pool = InspectionPool()
    print(f"{os.cpu_count()} CPUs; pool of {pool.workers} worker processes", flush=True)
    busy_before, own_before = machine_busy(), time.process_time()
    rows: list[Row] = []
    with pool:
        for index, (kind, folder) in enumerate(sessions.items()):
            rows += measure(kind, folder, pool, args.repeat, cold=index == 0)
    own = time.process_time() - own_before + WORKERS_CPU[0]
    others = machine_busy() - busy_before - own
    print_table(rows)
    if others > 0.05 * own:
        print(
            f"\nnote: other processes used {others:.1f} CPU-s during the run "
            f"({own:.1f} CPU-s were ours): expect lower, noisier figures than on a quiet machine"
        )
    return 0


def measure(kind: str, folder: Path, pool: InspectionPool, repeat: int, cold: bool) -> list[Row]:
    """Time the bare loop, serial inspect() and parallel inspect() on one session."""
    paths = sorted(str(p) for p in folder.rglob("*.dcm"))
    tags = list(HEADER_TAGS)
    relpath = ("BENCH", "SUBJ01", folder.name)

    def bare() -> None:
        for path in paths:
            pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)

    rows = []
    if cold:
        # A fresh pool: the fork server and the workers start inside this call, as they do
        # for a one-off `xnat-drop check` of a large session.
        with InspectionPool() as fresh:
            seconds, cpu, _ = timed(lambda: inspect(folder, relpath, pool=fresh), fresh)
        cold_row = Row(f"{kind}: inspect() parallel, cold pool", len(paths), seconds, cpu, 2)
        cold_row.cores = fresh.workers
    runs: dict[str, list[tuple[float, float]]] = {"bare": [], "serial": [], "parallel": []}
    serial: Session | None = None
    for _ in range(repeat):
        runs["bare"].append(timed(bare, None)[:2])
        seconds, cpu, serial = timed(lambda: inspect(folder, relpath), None)
        runs["serial"].append((seconds, cpu))
        seconds, cpu, parallel = timed(lambda: inspect(folder, relpath, pool=pool), pool)
        runs["parallel"].append((seconds, cpu))
        if parallel != serial:
            raise SystemExit("parallel inspect() differs from serial inspect()")
    assert serial is not None and len(serial.files) == len(paths)
    labels = {
        "bare": (f"{kind}: bare pydicom dcmread loop", 1),
        "serial": (f"{kind}: inspect() serial", 1),
        "parallel": (f"{kind}: inspect() parallel, warm pool", pool.workers),
    }
    for key, (label, cores) in labels.items():
        seconds, cpu = min(runs[key])
        rows.append(Row(label, len(paths), seconds, cpu, cores))
    if cold:
        rows.append(cold_row)
    return rows


def timed(
    work: Callable[[], Session | None], pool: InspectionPool | None
) -> tuple[float, float, Session | None]:
    """Wall seconds, CPU seconds (this process and the pool's workers) and the result."""
    before, workers_before = time.process_time(), workers_cpu(pool)
    start = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - start
    workers = workers_cpu(pool) - workers_before
    WORKERS_CPU[0] += workers
    return seconds, time.process_time() - before + workers, result


def workers_cpu(pool: InspectionPool | None) -> float:
    """CPU seconds used so far by the pool's current worker processes (Linux /proc)."""
    total = 0.0
    if pool is not None:
        for pid in pool.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def print_table(rows: list[Row]) -> None:
    head = ["case", "files", "seconds", "files/s", "files/s per core", "CPU s", "files/CPU-s"]
    table = [head, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    print()
    for n, line in enumerate(table):
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def warm(folder: Path) -> None:
    """Read every file once so the timings measure CPU, not the disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as fp:
                while fp.read(1 << 20):
                    pass


def generate(kind: str, files: int) -> Path:
    """The session `kind` with `files` files under bench/out/, written unless already there."""
    folder = OUT / f"{kind}-{files}"
    done = OUT / f"{kind}-{files}.done"
    stamp = f"format {FORMAT}\n"
    if done.is_file() and done.read_text() == stamp:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"writing the {kind} session ({files} files) to {folder} ...", flush=True)
    start = time.perf_counter()
    rng = random.Random(files)
    study = f"{UID_ROOT}{files}.{len(kind)}"
    if kind == "samples":
        specs = [
            SeriesSpec(number, name, images=count, rows=ROWS, columns=COLUMNS)
            for number, name, count in series_sizes(files)
        ]
        write_session(folder, specs, patient_id="BENCH01", study_uid=study, rng=rng)
    else:
        template = siemens_template()
        for number, name, count in series_sizes(files):
            write_series(folder, template, number, name, count, study, rng)
    done.write_text(stamp)
    print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
    return folder


def siemens_template() -> Dataset:
    """The header of a real Siemens MR image, made into a single 256x256 slice."""
    spec = importlib.util.find_spec("nibabel")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the siemens session needs nibabel (pip install -e '.[test]')")
    source = Path(spec.submodule_search_locations[0], "nicom", "tests", "data", "0.dcm")
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PatientID = "BENCH01"
    ds.PatientName = "BENCH01^DEMO"
    return ds


def write_series(
    folder: Path,
    template: Dataset,
    number: int,
    description: str,
    images: int,
    study: str,
    rng: random.Random,
) -> None:
    """Write one series from `template`: the constant part is encoded once, not per image."""
    ds = Dataset()
    ds.update(template)
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = f"{study}.{number}"
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.ProtocolName = description
    for tag in VARYING:
        if tag in ds:
            del ds[tag]
    # The constant elements between one varying element and the next, encoded once.
    segments = []
    low = 0
    for high in (*VARYING, 0xFFFFFFFF):
        part = Dataset()
        for element in ds:
            if low < element.tag < high:
                part.add(element)
        segments.append(encode(part))
        low = high
    subfolder = folder / f"{number:02d}_{description}"
    subfolder.mkdir(parents=True, exist_ok=True)
    for index in range(1, images + 1):
        uid = f"{study}.{number}.{index}"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        head = DicomBytesIO()
        head.is_little_endian, head.is_implicit_VR = True, False
        head.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(head, meta, enforce_standard=True)
        varying = Dataset()
        varying.SOPInstanceUID = uid
        varying.InstanceNumber = index
        varying.ImagePositionPatient = [-120.0, -120.0, round(index * 1.1 - 90, 2)]
        varying.SliceLocation = round(index * 1.1 - 90, 2)
        parts = [head.getvalue()]
        for segment, tag in zip(segments, (*VARYING, None), strict=True):
            parts.append(segment)
            if tag is not None:
                one = Dataset()
                one.add(varying[tag])
                parts.append(encode(one))
        parts += [PIXEL_HEADER, rng.randbytes(PIXEL_BYTES)]
        (subfolder / f"IM{index:04d}.dcm").write_bytes(b"".join(parts))


def encode(ds: Dataset) -> bytes:
    """`ds` as explicit VR little endian bytes."""
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return bytes(out.getvalue())


if __name__ == "__main__":  # the pool's workers import this module too: run only when asked
    sys.exit(main())
