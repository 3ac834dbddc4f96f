"""End to end: the daemon from "stable" to "in done/", against zip + curl and xnatpy.

Run from the repository root: `.venv/bin/python bench/e2e_bench.py` (see bench/README.md).

For each session size (2,000 files / 204 MB and 16,000 files / 2.1 GB of 16-bit MR images,
generated once under bench/out/e2e/) it measures, in the same run:

- the baseline: `zip -0 -r`, then curl POSTing the zip to the import service, streamed from
  the file (`-T`) and, where curl can (below 1 GiB), as `--data-binary @session.zip`;
- xnatpy's `session.services.import_` uploading the same zip (from a venv of its own);
- the real daemon (`xnat-drop run`), from the moment it declares the session stable (its log
  line "settled (...); claimed as ...") to the moment the folder is in done/, with
  `destination = "prearchive"` (the default) and, unless --no-archive, "archive";
- the XNAT stand-in's receive rate: curl -T alone into a stand-in in each of its modes.

Every upload goes to a fresh stand-in process (`xnat-drop emulator`), by default with its
benchmark-only `--fast-headers-only` path, so that the stand-in is not the bottleneck. Before
every timed run the session is read once (page cache warm) and synced, for the daemon and the
baselines alike. Each case runs --repeat times (baselines and daemon interleaved); the best
run is shown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from mr_series import series_sizes
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

OUT = Path(__file__).resolve().parent / "out" / "e2e"
SESSIONS = OUT / "sessions"
FORMAT = 1  # bump when generated sessions change: they are then written again
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
PROJECT, SUBJECT = "BENCH", "SUBJ01"
USER, PASSWORD = "bench", "bench-secret"  # the stand-in's account; nothing real
SETTLE = 1.0  # watch.settle_seconds of the daemon under test
TICK = os.sysconf("SC_CLK_TCK")
TIMEOUT = 900.0  # seconds any one step may take before the benchmark gives up
# The stand-in's modes: faithful, and its two benchmark-only fast paths (emulator/fastpath.py).
STAND_IN_FLAGS = {"faithful": [], "fast": ["--fast"], "headers-only": ["--fast-headers-only"]}
# Where the stand-in keeps what it receives (see stand_in_base): tmpfs when it has room.
STAND_IN_BASE = [OUT]


@dataclass(frozen=True)
class SessionSize:
    name: str  # folder name and XNAT session label
    files: int
    matrix: int  # rows = columns


SIZES = {
    "200MB": SessionSize("E2E_200MB", 2000, 224),
    "2GB": SessionSize("E2E_2GB", 16000, 256),
}
# Dropped first, so the daemon's inspection workers are running (as in a long-lived service)
# when the measured session arrives: >= workers.MIN_FILES files.
WARMUP = SessionSize("E2E_WARMUP", 256, 64)

# Elements that differ per image, in tag order; the rest of a series is encoded once.
VARYING = (0x00080018, 0x00200013, 0x00200032, 0x00201041)

XNATPY_SCRIPT = """
import json, os, sys, time
import xnat
url, path, label = sys.argv[1:4]
started = time.perf_counter()
session = xnat.connect(url, user=os.environ["BENCH_USER"], password=os.environ["BENCH_PASSWORD"],
                       no_parse_model=True, loglevel="ERROR")
connected = time.perf_counter()
result = session.services.import_(path, project="BENCH", subject="SUBJ01", experiment=label,
                                  import_handler="DICOM-zip", content_type="application/zip")
uploaded = time.perf_counter()
session.disconnect()
print(json.dumps({"connect": connected - started, "upload": uploaded - connected,
                  "uri": str(getattr(result, "uri", result))}))
"""


# -- the sessions -----------------------------------------------------------------------------


def generate(size: SessionSize) -> Path:
    """The session `size` under bench/out/e2e/sessions/, written unless already there."""
    folder = SESSIONS / size.name
    stamp = SESSIONS / f"{size.name}.done"
    text = f"format {FORMAT} files {size.files} matrix {size.matrix}\n"
    recover(size.name)
    if stamp.is_file() and stamp.read_text() == text and folder.is_dir():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"writing {size.name} ({size.files} files) to {folder} ...", flush=True)
    start = time.perf_counter()
    seed = size.files * 1000 + size.matrix
    study = f"{UID_ROOT}{seed}.{FORMAT}"
    rng = np.random.default_rng(seed)
    for number, description, count in series_sizes(size.files):
        write_series(folder, size.matrix, number, description, count, study, rng)
    # Every series' first and last file must be a valid Part 10 file to pydicom.
    for series in sorted(folder.iterdir()):
        for path in (min(series.iterdir()), max(series.iterdir())):
            ds = pydicom.dcmread(path)  # raises for a missing preamble or bad meta
            assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
            assert len(ds.PixelData) == size.matrix * size.matrix * 2
    stamp.write_text(text)
    print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
    return folder


def recover(name: str) -> None:
    """Put session `name` back under sessions/ if an interrupted run left it in a drop tree."""
    target = SESSIONS / name
    if target.exists():
        return
    for top in (OUT / "drop", OUT / "stage"):
        for path in _dirs_named(top, name, depth=4):
            print(f"moving {path} back to {target}", flush=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
            return


def _dirs_named(top: Path, name: str, depth: int) -> Iterator[Path]:
    if depth < 0 or not top.is_dir():
        return
    for child in top.iterdir():
        if child.is_dir() and not child.is_symlink():
            if child.name == name:
                yield child
            else:
                yield from _dirs_named(child, name, depth - 1)


def series_template(matrix: int, number: int, description: str, study: str) -> Dataset:
    """An MR image header as a scanner writes it (without the per-image elements)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]
    ds.InstanceCreationDate = "20261121"
    ds.InstanceCreationTime = "101500.000000"
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20261121"
    ds.StudyTime = "101500.000000"
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"10{number:02d}00.000000"
    ds.AccessionNumber = "A0001"
    ds.Modality = "MR"
    ds.Manufacturer = "SIEMENS"
    ds.InstitutionName = "xnat-drop bench"
    ds.ReferringPhysicianName = ""
    ds.StationName = "MRC00001"
    ds.StudyDescription = "research^bench"
    ds.SeriesDescription = description
    ds.ManufacturerModelName = "Prisma"
    ds.PatientName = f"{SUBJECT}^BENCH"
    ds.PatientID = SUBJECT
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "O"
    ds.PatientAge = "046Y"
    ds.PatientWeight = "70"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = ["SK", "SP"]
    ds.ScanOptions = "PFP"
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = "3"
    ds.RepetitionTime = "2000"
    ds.EchoTime = "30"
    ds.MagneticFieldStrength = "3"
    ds.SpacingBetweenSlices = "3"
    ds.ProtocolName = description
    ds.FlipAngle = "90"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = f"{study}.{number}"
    ds.StudyID = "1"
    ds.SeriesNumber = number
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = f"{study}.{number}.0"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = matrix
    ds.PixelSpacing = ["0.9375", "0.9375"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = "600", "1200"
    return ds


def write_series(
    folder: Path,
    matrix: int,
    number: int,
    description: str,
    images: int,
    study: str,
    rng: np.random.Generator,
    pixels: Any = None,
) -> None:
    """Write one series: constant header parts encoded once, a smooth image plus noise each."""
    ds = series_template(matrix, number, description, study)
    segments: list[bytes] = []  # the constant elements between two varying ones
    low = 0
    for high in (*VARYING, 0xFFFFFFFF):
        part = Dataset()
        for elem in ds:
            if low < elem.tag < high:
                part.add(elem)
        segments.append(encode(part))
        low = high
    pixel_bytes = matrix * matrix * 2
    pixel_head = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes)
    base = phantom(matrix, number)
    subfolder = folder / f"{number:02d}_{description}"
    subfolder.mkdir(parents=True, exist_ok=True)
    for index in range(1, images + 1):
        uid = f"{study}.{number}.{index}"
        z = round(index * 1.1 - 90, 2)
        varying = (
            element(0x00080018, b"UI", uid.encode()),
            element(0x00200013, b"IS", str(index).encode()),
            element(0x00200032, b"DS", f"-120\\-120\\{z}".encode()),
            element(0x00201041, b"DS", str(z).encode()),
        )
        parts = [file_meta(uid)]
        for segment, extra in zip(segments, (*varying, b""), strict=True):
            parts += [segment, extra]
        # A smooth head-like image whose brightness changes along the series, plus noise:
        # 12-bit values that deflate about 1.4:1, as scanner images do.
        weight = 0.35 + 0.65 * np.sin(np.pi * (index - 0.5) / images)
        if pixels is not None:  # another benchmark's image model
            parts += [pixel_head, pixels(base, weight, rng)]
        else:
            noise = rng.integers(0, 96, size=base.shape, dtype=np.uint16)
            image = (base * weight).astype(np.uint16) + noise
            parts += [pixel_head, image.astype("<u2").tobytes()]
        (subfolder / f"IM{index:05d}.dcm").write_bytes(b"".join(parts))


def phantom(matrix: int, number: int) -> Any:
    """A smooth head-like intensity map (float32, 0..3900), a little different per series."""
    axis = np.linspace(-1.0, 1.0, matrix, dtype=np.float32)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    r2 = (x / 0.78) ** 2 + (y / 0.92) ** 2
    head = np.clip(1.0 - r2, 0.0, None) ** 0.25
    detail = 0.5 + 0.25 * np.sin(6 * x + number) * np.cos(5 * y - number)
    return (3900 * head * detail).astype(np.float32)


def element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element with a 2-byte length, padded to even length."""
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def file_meta(sop_uid: str) -> bytes:
    """Preamble, "DICM" and the file meta group for one MR image."""
    body = b"".join(
        (
            struct.pack("<HH2sHI", 2, 1, b"OB", 0, 2) + b"\0\1",
            element(0x00020002, b"UI", MR_IMAGE_STORAGE.encode()),
            element(0x00020003, b"UI", sop_uid.encode()),
            element(0x00020010, b"UI", ExplicitVRLittleEndian.encode()),
            element(0x00020012, b"UI", PYDICOM_IMPLEMENTATION_UID.encode()),
            element(0x00020013, b"SH", b"XNAT_DROP_BENCH"),
        )
    )
    group_length = struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(body))
    return b"\0" * 128 + b"DICM" + group_length + body


def encode(ds: Dataset) -> bytes:
    """`ds` as explicit VR little endian bytes."""
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return bytes(out.getvalue())


def session_bytes(folder: Path) -> tuple[int, int]:
    """(files, bytes) below `folder`."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def warm(folder: Path) -> None:
    """Read every file once (page cache warm), then flush dirty pages to disk."""
    buffer = bytearray(1 << 20)
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb", buffering=0) as fp:
                while fp.readinto(buffer):
                    pass
    os.sync()


# -- processes: CPU, memory --------------------------------------------------------------------


def proc_stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (0 when it is gone)."""
    try:
        fields = proc_stat(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents.setdefault(int(proc_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += parents.get(current, [])
    return found


def family(pid: int) -> list[int]:
    """`pid` and every process below it, through every thread's /proc children list (cheaper
    than `descendants`, which reads all of /proc; used where it is sampled every 50 ms)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{current}/task/{task}/children").read_text()
            except FileNotFoundError:
                continue
            except OSError:  # a kernel without the children lists
                return descendants(pid)
            todo += [int(child) for child in text.split()]
    return found


def tree_cpu(pid: int) -> dict[int, float]:
    return {p: cpu_seconds(p) for p in descendants(pid)}


def high_water_mb(pid: int) -> float:
    """VmHWM (peak resident set) of `pid` in MiB (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it does not end in `timeout` seconds (only our own child)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the XNAT stand-in -------------------------------------------------------------------------


class StandIn:
    """`xnat-drop emulator` as a separate process with its own data folder (deleted on stop)."""

    def __init__(self, root: Path, mode: str) -> None:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        self.root = root
        cmd = [sys.executable, "-m", "xnat_standin", "--port", "0"]
        cmd += ["--project", PROJECT, "--user", f"{USER}:{PASSWORD}", "--root", str(root)]
        cmd += STAND_IN_FLAGS[mode]
        self.log = (OUT / f"{root.name}.log").open("w")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=OUT
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        found = re.search(r"listening on (http://\S+)", line)
        if found is None:
            stop_process(self.proc)
            raise SystemExit(f"the stand-in did not start: {line!r} (see {self.log.name})")
        self.url = found.group(1)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_emulator/state", timeout=60) as answer:
            data: dict[str, Any] = json.loads(answer.read())
        return data

    def files_held(self, label: str) -> int:
        """DICOM files the stand-in holds for session `label` (prearchive and archive)."""
        state = self.state()
        rows = [s for s in state["prearchive"] if s["name"] == label]
        rows += [s for s in state["archive"] if s["label"] == label]
        return sum(len(files) for row in rows for files in row["scans"].values())

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
        os.sync()  # the deleted files' blocks are released before the next timed run

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stand_in_base(wanted: Path | None, largest: int) -> Path:
    """Where the stand-ins store uploads: `wanted`, else tmpfs (/dev/shm) if it has room.

    Not the disk under bench/out by default: ext4 makes creating a file expensive (a scan
    past every inode deleted in the last minutes, `recently_deleted` in the kernel) right
    after thousands of files were deleted, which each stand-in does when it is cleaned up.
    A stand-in on that disk would then be the bottleneck of whichever run came next.
    """
    if wanted is not None:
        return wanted
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 2 * largest + (1 << 30):
        return shm / f"xnat-drop-bench-{os.getpid()}"
    return OUT


def import_url(base: str, label: str) -> str:
    query = "&".join(
        (
            "import-handler=DICOM-zip",
            "inbody=true",
            f"PROJECT_ID={PROJECT}",
            f"SUBJECT_ID={SUBJECT}",
            f"EXPT_LABEL={label}",
        )
    )
    return f"{base}/data/services/import?{query}"


# -- the measurements ----------------------------------------------------------------------------


@dataclass
class Result:
    size: str
    case: str
    seconds: float
    mbytes: float  # session bytes / 1e6
    cpu: float | None = None  # CPU seconds of the process(es) measured
    stand_in_cpu: float | None = None
    rss_main: float | None = None  # MB
    rss_all: float | None = None  # MB, summed over the daemon's processes
    ratio: float | None = None  # wall / wall of zip + curl -T (the baseline)
    ratio_in_memory: float | None = None  # wall / wall of zip + curl --data-binary @zip
    others_cpu: float | None = None  # CPU seconds of everything else on the machine
    pid: int | None = None  # the daemon's
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.mbytes / self.seconds


@dataclass
class Timed:
    seconds: float
    cpu: float  # of the command itself
    others: float  # CPU seconds of every other process meanwhile (this script's included)
    status: int


def timed(
    cmd: list[str],
    cwd: Path,
    stdout: Path,
    extra: tuple[int, ...] = (),
    env: dict[str, str] | None = None,
) -> Timed:
    """Run `cmd` (stdout to a file, stderr beside it); its wall and CPU seconds (from wait4),
    and the CPU the rest of the machine used meanwhile, `extra` processes left out."""
    extra_before = sum(cpu_seconds(pid) for pid in extra)
    busy = machine_busy()
    started = time.perf_counter()
    with stdout.open("w") as out, stdout.with_suffix(".err").open("w") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, env=env)
        _, status, rusage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    cpu = rusage.ru_utime + rusage.ru_stime
    extra_cpu = sum(cpu_seconds(pid) for pid in extra) - extra_before
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Timed(seconds, cpu, machine_busy() - busy - cpu - extra_cpu, proc.returncode)


def measure_baseline(
    size: str, folder: Path, mbytes: float, files: int, mode: str, all_modes: bool
) -> tuple[list[Result], list[Result]]:
    """zip -0 -r, then curl into the import service: (baseline rows, receive-rate rows).

    The zip is sent with `curl -T` to the stand-in in `mode` (the baseline), and with
    `curl --data-binary @zip` where curl can; with `all_modes`, also with `curl -T` to a stand-in
    in each other mode, for the stand-in's receive rates.
    """
    zip_path = OUT / "session.zip"
    zip_path.unlink(missing_ok=True)
    warm(folder)
    cmd = ["zip", "-0", "-r", "-q", str(zip_path), folder.name]
    zipped = timed(cmd, folder.parent, OUT / "zip.out")
    if zipped.status != 0:
        raise SystemExit(f"zip failed ({zipped.status})")
    # No sync after zip, as whoever types the commands would not: the zip's pages are written
    # back by the next warm-up's sync, outside every timed interval.
    baseline = [
        Result(
            size, "baseline: zip -0 -r", zipped.seconds, mbytes, cpu=zipped.cpu,
            others_cpu=zipped.others,
            details={"zip MB": zip_path.stat().st_size / 1e6},
        )
    ]  # fmt: skip
    rates = []
    # -T streams the zip from the file; --data-binary @file reads all of it into memory before
    # it sends a byte, and this curl refuses that for a zip over 1 GiB ("out of memory").
    # Both POST the same bytes with Content-Length.
    runs = [(m, "-T") for m in STAND_IN_FLAGS if m != mode and all_modes] + [(mode, "-T")]
    if zip_path.stat().st_size < 1 << 30:
        runs.append((mode, "--data-binary"))
    for stand_in_mode, option in runs:
        sent, stand_in_cpu, transfer = send_with_curl(
            zip_path, folder.name, files, stand_in_mode, option
        )
        how = "-T zip" if option == "-T" else "--data-binary @zip"
        if all_modes:
            rates.append(
                Result(
                    size,
                    f"curl {how} -> stand-in {stand_in_mode}",
                    transfer,
                    mbytes,
                    cpu=sent.cpu,
                    stand_in_cpu=stand_in_cpu,
                    others_cpu=sent.others,
                    details={"curl command s": sent.seconds},
                )
            )
        if stand_in_mode == mode:
            baseline += [
                Result(
                    size,
                    f"baseline: curl {how}",
                    sent.seconds,
                    mbytes,
                    cpu=sent.cpu,
                    stand_in_cpu=stand_in_cpu,
                    others_cpu=sent.others,
                    details={"transfer s": transfer},
                ),
                Result(
                    size,
                    f"baseline: zip + curl {how}",
                    zipped.seconds + sent.seconds,
                    mbytes,
                    cpu=zipped.cpu + sent.cpu,
                    stand_in_cpu=stand_in_cpu,
                    others_cpu=zipped.others + sent.others,
                ),
            ]
        warm(folder)  # also syncs the zip's pages before the next upload
    return baseline, rates


def send_with_curl(
    zip_path: Path, label: str, files: int, mode: str, option: str
) -> tuple[Timed, float, float]:
    """POST the zip with curl to a fresh stand-in: (curl's timing, stand-in CPU s, transfer s).

    The transfer time is curl's own `time_total`, from connecting to the answer: for
    --data-binary it leaves out reading the file into memory, which the command's wall
    time includes.
    """
    with StandIn(STAND_IN_BASE[0] / "xnat-baseline", mode) as stand_in:
        before = stand_in.cpu()
        source = f"@{zip_path}" if option == "--data-binary" else str(zip_path)
        cmd = [
            "curl", "-sS", "-X", "POST", "-u", f"{USER}:{PASSWORD}",
            "-H", "Content-Type: application/zip", option, source,
            "-o", str(OUT / "curl.out"), "-w", "%{http_code} %{time_total}",
            import_url(stand_in.url, label),
        ]  # fmt: skip
        sent = timed(cmd, OUT, OUT / "curl.status", (stand_in.proc.pid,))
        stand_in_cpu = stand_in.cpu() - before
        held = stand_in.files_held(label)
    status, _, transfer = (OUT / "curl.status").read_text().partition(" ")
    answer = (OUT / "curl.out").read_text(errors="replace").strip()
    if sent.status != 0 or status != "200" or held != files:
        raise SystemExit(f"curl failed: HTTP {status}, {held} of {files} files: {answer}")
    return sent, stand_in_cpu, float(transfer)


def measure_xnatpy(
    size: str, folder: Path, mbytes: float, files: int, python: Path, mode: str
) -> Result:
    """xnatpy's services.import_ uploading the zip the baseline made (kept for this)."""
    zip_path = OUT / "session.zip"
    warm(folder)
    with zip_path.open("rb", buffering=0) as fp:  # the zip is as warm as for curl
        while fp.read(1 << 20):
            pass
    with StandIn(STAND_IN_BASE[0] / "xnat-xnatpy", mode) as stand_in:
        env = {**os.environ, "BENCH_USER": USER, "BENCH_PASSWORD": PASSWORD}
        before = stand_in.cpu()
        cmd = [str(python), "-c", XNATPY_SCRIPT, stand_in.url, str(zip_path), folder.name]
        run = timed(cmd, OUT, OUT / "xnatpy.out", (stand_in.proc.pid,), env)
        stand_in_cpu = stand_in.cpu() - before
        held = stand_in.files_held(folder.name)
    if run.status != 0 or held != files:
        error = _read(OUT / "xnatpy.err")[-2000:]
        raise SystemExit(f"xnatpy upload failed ({held} of {files} files): {error}")
    report = json.loads((OUT / "xnatpy.out").read_text().strip().splitlines()[-1])
    return Result(
        size,
        "xnatpy services.import_ (upload only)",
        report["upload"],
        mbytes,
        cpu=run.cpu,
        stand_in_cpu=stand_in_cpu,
        others_cpu=run.others,
        details={"process wall s (with imports)": run.seconds, "connect s": report["connect"]},
    )


@dataclass
class Snapshot:
    """CPU clocks at one moment: the daemon's processes, the stand-in, the whole machine."""

    daemon: dict[int, float]
    stand_in: float
    machine: float  # busy CPU seconds since boot
    own: float  # this script's CPU seconds (all its threads)

    @classmethod
    def take(cls, daemon: int, stand_in: int) -> Snapshot:
        return cls(tree_cpu(daemon), cpu_seconds(stand_in), machine_busy(), time.process_time())

    def since(self, earlier: Snapshot) -> tuple[float, float, float]:
        """(daemon CPU s, stand-in CPU s, CPU s of all other processes) since `earlier`."""
        daemon = sum(v - earlier.daemon.get(pid, 0.0) for pid, v in self.daemon.items())
        stand_in = self.stand_in - earlier.stand_in
        others = self.machine - earlier.machine - daemon - stand_in - (self.own - earlier.own)
        return daemon, stand_in, others


@dataclass
class LogLine:
    at: float  # wall clock from the log's own timestamp
    arrived: float  # wall clock when the benchmark read it
    text: str


class Daemon:
    """The real `xnat-drop run` over a fresh drop tree, its stderr read line by line."""

    def __init__(
        self,
        url: str,
        destination: str,
        stand_in: int,
        extra_config: str = "",
        transport: str = "import",
    ) -> None:
        """`extra_config`: TOML appended to the configuration (another benchmark's tables);
        `transport`: xnat.transport."""
        self.stand_in = stand_in  # pid, sampled together with the daemon's at the claim
        self.drop = OUT / "drop"
        self.state = OUT / "state"
        for path in (self.drop, self.state, OUT / "stage"):
            shutil.rmtree(path, ignore_errors=True)
        (self.drop / "incoming").mkdir(parents=True)
        self.state.mkdir()
        secret = OUT / "secret"
        secret.unlink(missing_ok=True)
        secret.touch(mode=0o600)
        secret.write_text(f"{USER}:{PASSWORD}\n")
        config = OUT / "xnat-drop.toml"
        config.write_text(
            f"""
[paths]
root = "{self.drop}"
state_dir = "{self.state}"

[watch]
settle_seconds = {SETTLE}
rescan_seconds = 5

[xnat]
url = "{url}"
secret_file = "{secret}"
connect_timeout_seconds = 5
read_timeout_seconds = 600
destination = "{destination}"
transport = "{transport}"

[retry]
first_delay_seconds = 1
max_delay_seconds = 5
max_attempts = 2
{extra_config}"""
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in ("CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC")
        }
        self.log_file = (OUT / f"daemon-{destination}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xnat_drop", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=OUT,
        )
        self.lines: list[LogLine] = []
        self.rss: list[tuple[float, float]] = []  # (wall clock, RSS MB of the main process)
        self.claimed = threading.Event()
        self.at_claim: Snapshot | None = None
        self._watch_for = ""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for text in self.proc.stderr:
            arrived = time.time()
            self.log_file.write(text)
            self.log_file.flush()
            if self._watch_for and f"/{self._watch_for}: settled (" in text:
                # The CPU clocks at the moment the daemon declared the session stable.
                self.at_claim = Snapshot.take(self.proc.pid, self.stand_in)
                self.claimed.set()
            with self._lock:
                self.lines.append(LogLine(_log_time(text) or arrived, arrived, text.rstrip()))

    def line(self, pattern: str) -> LogLine | None:
        """The first log line matching `pattern` (a regular expression)."""
        with self._lock:
            return next((line for line in self.lines if re.search(pattern, line.text)), None)

    def deliver(self, folder: Path) -> tuple[float, float, Path]:
        """Drop `folder` into incoming/ (one rename at t0); returns (t0, t_done, done path).

        The project/subject folders are built beside the drop tree and renamed into incoming/
        together, so the daemon's tidying of empty folders cannot race the drop.
        """
        self._watch_for = folder.name
        self.claimed.clear()
        incoming = self.drop / "incoming"
        stage = OUT / "stage"
        (stage / PROJECT / SUBJECT).mkdir(parents=True, exist_ok=True)
        folder.rename(stage / PROJECT / SUBJECT / folder.name)
        deadline = time.monotonic() + 30
        while (incoming / PROJECT).exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the previous session's now-empty folders are being tidied
        started = time.time()
        if (incoming / PROJECT).exists():
            (incoming / PROJECT / SUBJECT).mkdir(parents=True, exist_ok=True)
            (stage / PROJECT / SUBJECT / folder.name).rename(
                incoming / PROJECT / SUBJECT / folder.name
            )
        else:
            (stage / PROJECT).rename(incoming / PROJECT)
        done = self.drop / "done" / PROJECT / SUBJECT / folder.name
        failed = self.drop / "failed" / PROJECT / SUBJECT / folder.name
        deadline = time.monotonic() + TIMEOUT
        statm = Path(f"/proc/{self.proc.pid}/statm")
        page_mb = os.sysconf("SC_PAGESIZE") / (1 << 20)
        self.rss = []
        while not done.exists():
            with contextlib.suppress(OSError):
                self.rss.append((time.time(), int(statm.read_text().split()[1]) * page_mb))
            if failed.exists():
                report = failed.parent / f"{folder.name}.report.txt"
                time.sleep(0.5)
                folder_back(failed, folder)
                raise SystemExit(f"the daemon failed the session:\n{_read(report)}")
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon stopped or timed out; see {self.log_file.name}")
            time.sleep(0.005)
        return started, time.time(), done

    def stop(self) -> None:
        stop_process(self.proc)
        self._reader.join(5)
        self.log_file.close()


def _log_time(text: str) -> float | None:
    found = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ", text)
    if found is None:
        return None
    moment = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")
    return moment.timestamp() + int(found.group(2)) / 1000


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        return f"({exc})"


def folder_back(path: Path, folder: Path) -> None:
    """Return a session the daemon finished with to its place under sessions/."""
    path.rename(folder)


def measure_daemon(
    size: str,
    folder: Path,
    mbytes: float,
    files: int,
    destination: str,
    mode: str,
    spy: Path | None = None,
) -> Result:
    """The daemon from "settled; claimed" to "in done/", destination prearchive or archive."""
    warmup = generate(WARMUP)
    with StandIn(STAND_IN_BASE[0] / f"xnat-daemon-{destination}", mode) as stand_in:
        daemon = Daemon(stand_in.url, destination, stand_in.proc.pid)
        profiler = None
        try:
            _, _, done = daemon.deliver(warmup)  # starts the inspection workers
            folder_back(done, warmup)
            warm(folder)
            if spy is not None:
                profiler = start_profiler(spy, daemon.proc.pid)
            t0, finished, done = daemon.deliver(folder)
            at_done = Snapshot.take(daemon.proc.pid, stand_in.proc.pid)
            pids = descendants(daemon.proc.pid)
            rss = {pid: high_water_mb(pid) for pid in pids}
            if profiler is not None:
                stop_profiler(profiler)
            daemon.claimed.wait(10)
            claim = daemon.line(rf"/{folder.name}: settled \(")
            if claim is None or daemon.at_claim is None:
                raise SystemExit(f"no 'settled ... claimed' line in {daemon.log_file.name}")
            held = stand_in.files_held(folder.name)
        finally:
            daemon.stop()
            if profiler is not None:
                stop_profiler(profiler)
    if held != files:
        raise SystemExit(f"the stand-in holds {held} of {files} files after the daemon's upload")
    folder_back(done, folder)
    cpu, stand_in_cpu, others = at_done.since(daemon.at_claim)
    phases = {}
    judged = daemon.line(rf"/{folder.name}: inspected ")
    uploading = daemon.line(rf"/{folder.name}: uploading ")
    if judged is not None:
        phases["inspect+rules s"] = judged.at - claim.at
    if judged is not None and uploading is not None:
        phases["checks s"] = uploading.at - judged.at
    if uploading is not None:
        phases["upload+verify+finish s"] = finished - uploading.at
    main = daemon.proc.pid
    marks = [("claim", claim.at)]
    marks += [(name, line.at) for name, line in (("judged", judged), ("upload", uploading)) if line]
    for (name, start), (_, stop) in zip(marks, [*marks[1:], ("done", finished)], strict=True):
        during = [mb for at, mb in daemon.rss if start <= at < stop]
        if during:
            phases[f"RSS MiB max {name}->"] = max(during)
    return Result(
        size,
        f"daemon, destination={destination}",
        finished - claim.at,
        mbytes,
        cpu=cpu,
        stand_in_cpu=stand_in_cpu,
        rss_main=rss.get(main, 0.0),
        rss_all=sum(rss.values()),
        others_cpu=others,
        pid=main,
        details={
            **phases,
            "t0 -> claim s (settle 1 s)": claim.at - t0,
            "log read latency ms": (claim.arrived - claim.at) * 1000,
            "processes": len(pids),
            "max VmHWM of the others MiB": max(
                (v for p, v in rss.items() if p != main), default=0.0
            ),
        },
    )


# -- profiling ---------------------------------------------------------------------------------


def start_profiler(out: Path, pid: int) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy", path=str(venv_dir() / "bin"))
    if py_spy is None:
        raise SystemExit("py-spy is missing from the benchmark's venv")
    cmd = [py_spy, "record", "--pid", str(pid), "--subprocesses", "--idle", "--threads"]
    cmd += ["--rate", str(PROFILE_RATE), "--format", "raw", "--output", str(out), "--nonblocking"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches
    return proc


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    """Stop py-spy the way it likes (SIGINT: it writes its output), then wait."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Where the daemon's time goes. A sample of the thread working on the session (any stack
# through Service._attempt: py-spy runs with --idle, so these add up to wall time) is named by
# the first rule with a frame containing one of its words; samples of the inspection worker
# processes that are reading files are counted apart (CPU time of all workers together).
PROFILE_RULES = (
    ("inspect: walk the folder", ("_Survey.advance",)),
    ("inspect: wait for the worker processes", ("InspectionPool.map",)),
    ("inspect: in the daemon (merge, digests, rules)", ("Service._judge",)),
    ("zip: open files, stat, mtime", ("ZipStream._open",)),
    ("zip: read files + CRC-32", ("ZipStream._fill", "ZipStream._send_large")),
    ("zip: cut pieces for the socket", ("ZipStream.read", "ZipStream.__iter__")),
    ("HTTP: socket send", ("HTTPConnection.send (", "sendall")),
    ("HTTP: wait for XNAT's answer", ("getresponse",)),
    ("XNAT calls: checks, verify, build", ("XnatClient.",)),
    ("finish: reports, ledger, move", ("Service._finish",)),
)
PROFILE_RATE = 100  # samples per second


def summarize_profile(raw: Path) -> list[tuple[str, float]]:
    """(category, seconds) from py-spy's raw output of one daemon run."""
    counts: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        frames = stack.split(";")
        if any("Service._attempt" in f for f in frames):
            category = next(
                (
                    name
                    for name, words in PROFILE_RULES
                    if any(w in f for f in frames for w in words)
                ),
                "other",
            )
        elif any("classify_chunk" in f for f in frames):
            category = "(inspection workers reading headers, CPU of all workers)"
        else:
            continue
        counts[category] += int(number)
    return [(name, n / PROFILE_RATE) for name, n in counts.most_common()]


# -- the helpers' venv (xnatpy, py-spy) --------------------------------------------------------


def venv_dir() -> Path:
    return OUT / "venv"


def bench_venv(packages: list[str]) -> Path | None:
    """A venv under bench/out/e2e/venv with `packages` (never the project's venv)."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} for {', '.join(packages)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    missing = [
        p
        for p in packages
        if subprocess.run(
            [str(python), "-m", "pip", "show", "-q", p], capture_output=True, check=False
        ).returncode
    ]
    if missing:
        print(f"installing {', '.join(missing)} into {venv} ...", flush=True)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *missing],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if install.returncode != 0:
            print(f"note: could not install {', '.join(missing)}: {install.stderr[-500:]}")
            return None
    return python


# -- the report --------------------------------------------------------------------------------


def print_table(results: list[Result], title: str) -> None:
    head = [
        "size", "case", "wall s", "MB/s", "ratio", "ratio d-b", "CPU s", "stand-in CPU s",
        "RSS MiB main", "RSS MiB all", "other CPU s",
    ]  # fmt: skip

    def num(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [head]
    for r in results:
        rows.append(
            [
                r.size, r.case, num(r.seconds), f"{r.rate:.0f}", num(r.ratio),
                num(r.ratio_in_memory), num(r.cpu), num(r.stand_in_cpu), num(r.rss_main, 0),
                num(r.rss_all, 0), num(r.others_cpu, 1),
            ]
        )  # fmt: skip
    keep = [i for i in range(len(head)) if any(row[i] != "-" for row in rows[1:])]
    rows = [[row[i] for i in keep] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(keep))]
    print(f"\n{title}\n")
    for n, row in enumerate(rows):
        print(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for r in results:
        if r.details:
            shown = ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.details.items()
            )
            print(f"{r.size} {r.case}: {shown}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="200MB,2GB", help="comma-separated: 200MB, 2GB (default both)"
    )
    parser.add_argument(
        "--stand-in",
        choices=list(STAND_IN_FLAGS),
        default="headers-only",
        help="the stand-in's mode for the comparison (default headers-only: see README)",
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="rounds per size; the best of each case is shown"
    )
    parser.add_argument("--no-archive", action="store_true", help="skip destination=archive")
    parser.add_argument("--no-xnatpy", action="store_true", help="skip the xnatpy upload")
    parser.add_argument(
        "--stand-in-dir",
        type=Path,
        help="where the stand-ins store uploads (default: /dev/shm when it has room)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, one more daemon run of the largest size under py-spy (not timed)",
    )
    args = parser.parse_args()
    sizes = [SIZES[s.strip()] for s in args.sizes.split(",") if s.strip()]
    for tool in ("zip", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed for the baseline")
    OUT.mkdir(parents=True, exist_ok=True)
    wanted = ([] if args.no_xnatpy else ["xnat"]) + (["py-spy"] if args.profile else [])
    helper = bench_venv(wanted) if wanted else None
    started = time.perf_counter()
    mode = args.stand_in
    folders = [generate(size) for size in sizes]
    largest = max(session_bytes(folder)[1] for folder in folders)
    STAND_IN_BASE[0] = stand_in_base(args.stand_in_dir, largest)
    print(
        f"{os.cpu_count()} CPUs; stand-in mode {mode}, storing in {STAND_IN_BASE[0]}; "
        "sessions read once (page cache warm) and synced before every timed run",
        flush=True,
    )
    options = Options(mode, args.repeat, None if args.no_xnatpy else helper, not args.no_archive)
    results: list[Result] = []
    rates: list[Result] = []
    try:
        for size, folder in zip(sizes, folders, strict=True):
            found, found_rates = measure_size(size, folder, options)
            results += found
            rates += found_rates
        print_table(rates, "The stand-in's receive rate: curl -T alone into each mode")
        print_table(results, f"End to end (stand-in mode {mode})")
        if args.profile:
            profile(sizes[-1], mode)
    finally:
        if STAND_IN_BASE[0] != OUT:
            shutil.rmtree(STAND_IN_BASE[0], ignore_errors=True)
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s")
    return 0


@dataclass
class Options:
    mode: str  # the stand-in's mode for the comparison
    repeat: int
    xnatpy: Path | None  # the helper venv's python, None: skip xnatpy
    archive: bool


def measure_size(
    size: SessionSize, folder: Path, options: Options
) -> tuple[list[Result], list[Result]]:
    """Every case for one session, `options.repeat` rounds, the best (shortest) of each kept.

    Returns (end-to-end rows, receive-rate rows). Each round runs the baselines, then the
    daemon, so a busy spell on the machine hits both alike.
    """
    files, nbytes = session_bytes(folder)
    mbytes = nbytes / 1e6
    label = f"{mbytes:,.0f} MB"
    print(f"{size.name}: {files} files, {label}", flush=True)
    best: dict[str, Result] = {}
    rates: list[Result] = []

    def keep(result: Result) -> None:
        print(f"  {result.case}: {result.seconds:.2f} s", flush=True)
        if result.case not in best or result.seconds < best[result.case].seconds:
            best[result.case] = result

    for round_ in range(options.repeat):
        baseline, found = measure_baseline(label, folder, mbytes, files, options.mode, round_ == 0)
        rates += found
        for result in baseline:
            keep(result)
        if options.xnatpy is not None:
            result = measure_xnatpy(label, folder, mbytes, files, options.xnatpy, options.mode)
            keep(result)
            keep(
                Result(
                    label,
                    "zip + xnatpy",
                    baseline[0].seconds + result.seconds,
                    mbytes,
                    stand_in_cpu=result.stand_in_cpu,
                )
            )
        (OUT / "session.zip").unlink(missing_ok=True)
        for destination in ("prearchive", *(("archive",) if options.archive else ())):
            keep(measure_daemon(label, folder, mbytes, files, destination, options.mode))
    reference = best["baseline: zip + curl -T zip"]
    in_memory = best.get("baseline: zip + curl --data-binary @zip")
    for result in best.values():
        if result.case.startswith("daemon"):
            result.ratio = result.seconds / reference.seconds
            if in_memory is not None:
                result.ratio_in_memory = result.seconds / in_memory.seconds
    return list(best.values()), rates


def profile(size: SessionSize, mode: str) -> None:
    """One more daemon run under py-spy; prints where the main process's time went."""
    folder = generate(size)
    files, nbytes = session_bytes(folder)
    raw = OUT / "profile.raw"
    print(f"\nprofiling the daemon (py-spy, 100 Hz) on {size.name}; output {raw}", flush=True)
    result = measure_daemon("profile", folder, nbytes / 1e6, files, "prearchive", mode, raw)
    print(f"daemon under py-spy: {result.seconds:.1f} s from claim to done/ (py-spy slows it)")
    for name, seconds in summarize_profile(raw):
        print(f"  {seconds:6.2f} s  {name}")


if __name__ == "__main__":
    sys.exit(main())
