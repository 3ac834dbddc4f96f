"""A slow link and a cold cache: the daemon against zip -0/-1 + curl, and what it reads.

Run from the repository root: `.venv/bin/python bench/link_bench.py` (see bench/README.md).

Two sessions, generated once under bench/out/link/sessions/: `typical` (1,800 MR images of
256x256 and 512x512, 128 KiB to 512 KiB each, about 340 MB) and `large` (three enhanced
multi-frame MR files of 144 frames of 512x512, 75 MB each). The images are magnitude MR
images of the e2e bench's head-like phantom, 12-bit values in 16-bit words, with noise
calibrated to deflate as a real MR image does (`mr_pixels`: about 1.8:1).

Each case runs against a fresh stand-in (`--fast-headers-only`), on the fast link (no limit)
and on a slow one (`--receive-rate 12`: 12 MB/s, about 100 Mbit/s), page cache warm (every
file read once before timing) and, where the machine allows `drop_caches`, cold. The cases
alternate within each round:

- the daemon (`xnat-drop run`, `[zip] compression` as --compression), timed from its log line
  "settled ...; claimed as" to the folder in done/ (as bench/e2e_bench.py does);
- `zip -0 -r` + `curl -X POST -T zip`;
- `zip -1 -r` + `curl -X POST -T zip`.

For the daemon it also sums `rchar` (bytes returned by read-like system calls) over its main
process and every descendant, sampled every 50 ms from /proc/<pid>/io, and divides it by the
session's bytes on disk: how often the daemon reads each byte of a session.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import e2e_bench as e2e
import numpy as np
import pydicom
from mr_series import series_sizes
from pydicom.dataset import Dataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

OUT = Path(__file__).resolve().parent / "out" / "link"
SESSIONS = OUT / "sessions"
FORMAT = 2  # bump when generated sessions change: they are then written again
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
# The matrix of each series of the typical session (mr_series.SERIES numbers): the structural
# and angiography series at 512 (512 KiB per image), the rest at 256 (128 KiB).
MATRIX = {1: 256, 2: 256, 3: 512, 4: 512, 5: 256, 6: 256, 7: 256, 8: 512, 9: 512}
TYPICAL_FILES = 1800
# The large session: (series number, description, frames of 512 x 512) per file.
LARGE = ((20, "ep2d_bold_mb_enh", 144), (21, "t1_mprage_enh", 144), (22, "dwi_enh", 144))
LARGE_MATRIX = 512
SAMPLE_SECONDS = 0.05  # /proc/<pid>/io of the daemon's processes
TARGETS = {"typical": 1.10, "large": 1.02}  # rchar per session byte wanted (issue 17)
CASES = ("daemon", "zip -0 + curl -T", "zip -1 + curl -T")
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


# -- the sessions ------------------------------------------------------------------------------


def generate(kind: str) -> Path:
    """The session `kind` (typical, large) under bench/out/link/sessions/, written once."""
    name = f"LINK_{kind.upper()}"
    folder = SESSIONS / name
    stamp = SESSIONS / f"{name}.done"
    text = f"format {FORMAT} {kind} {TYPICAL_FILES} {LARGE}\n"
    if not folder.exists():  # an interrupted run left it in the drop tree
        for top in (OUT / "drop", OUT / "stage"):
            for path in e2e._dirs_named(top, name, depth=4):
                print(f"moving {path} back to {folder}", flush=True)
                folder.parent.mkdir(parents=True, exist_ok=True)
                path.rename(folder)
                break
    if stamp.is_file() and stamp.read_text() == text and folder.is_dir():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"writing the {kind} session to {folder} ...", flush=True)
    started = time.perf_counter()
    if kind == "typical":
        study = f"{e2e.UID_ROOT}71.{FORMAT}"
        rng = np.random.default_rng(71)
        for number, description, count in series_sizes(TYPICAL_FILES):
            e2e.write_series(
                folder, MATRIX[number], number, description, count, study, rng, mr_pixels
            )
    else:
        study = f"{e2e.UID_ROOT}72.{FORMAT}"
        rng = np.random.default_rng(72)
        for number, description, frames in LARGE:
            write_enhanced(folder, number, description, frames, study, rng)
    for path in folder.rglob("*.dcm"):  # every file must be a valid Part 10 file to pydicom
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        if kind == "typical":
            break
    stamp.write_text(text)
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return folder


def write_enhanced(
    folder: Path, number: int, description: str, frames: int, study: str, rng: Any
) -> None:
    """One enhanced MR multi-frame file: functional groups and `frames` phantom images."""
    matrix = LARGE_MATRIX
    ds = e2e.series_template(matrix, number, description, study)
    for keyword in ("ImageOrientationPatient", "SliceThickness", "PixelSpacing", "EchoTime"):
        delattr(ds, keyword)
    uid = f"{study}.{number}.1"
    ds.SOPClassUID = ENHANCED_MR
    ds.SOPInstanceUID = uid
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = frames
    ds.ContentQualification = "RESEARCH"
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = ["0.46875", "0.46875"]
    measures.SliceThickness = "1"
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    timing = Dataset()
    timing.RepetitionTime = "2000"
    timing.FlipAngle = "90"
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    shared.MRTimingAndRelatedParametersSequence = [timing]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for index in range(1, frames + 1):
        item = Dataset()
        content = Dataset()
        content.FrameAcquisitionNumber = index
        content.InStackPositionNumber = index
        content.StackID = "1"
        content.DimensionIndexValues = [1, index]
        position = Dataset()
        position.ImagePositionPatient = ["-120", "-120", f"{index - frames / 2:.1f}"]
        echo = Dataset()
        echo.EffectiveEchoTime = 30.0
        item.FrameContentSequence = [content]
        item.PlanePositionSequence = [position]
        item.MREchoSequence = [echo]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    meta = b"".join(
        (
            struct.pack("<HH2sHI", 2, 1, b"OB", 0, 2) + b"\0\1",
            e2e.element(0x00020002, b"UI", ENHANCED_MR.encode()),
            e2e.element(0x00020003, b"UI", uid.encode()),
            e2e.element(0x00020010, b"UI", ExplicitVRLittleEndian.encode()),
            e2e.element(0x00020012, b"UI", PYDICOM_IMPLEMENTATION_UID.encode()),
            e2e.element(0x00020013, b"SH", b"XNAT_DROP_BENCH"),
        )
    )
    group_length = struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(meta))
    frame_bytes = matrix * matrix * 2
    base = e2e.phantom(matrix, number)
    subfolder = folder / f"{number:02d}_{description}"
    subfolder.mkdir(parents=True, exist_ok=True)
    with (subfolder / "IM00001.dcm").open("wb") as out:
        out.write(b"\0" * 128 + b"DICM" + group_length + meta + e2e.encode(ds))
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frame_bytes * frames))
        for index in range(1, frames + 1):
            weight = 0.35 + 0.65 * np.sin(np.pi * (index - 0.5) / frames)
            out.write(mr_pixels(base, weight, rng))


def mr_pixels(base: Any, weight: float, rng: np.random.Generator) -> bytes:
    """One MR magnitude image of e2e_bench's head-like phantom: the signal (peak 1,200 of 4,095)
    plus complex Gaussian noise (sigma 4) taken as a magnitude, Rayleigh in the air, and
    tissue texture (sigma 10) inside. Calibrated to deflate (zlib level 1) as the one real
    uncompressed 12-bit MR image at hand does: pydicom's examples_overlay.dcm, 0.55 (1.8:1);
    e2e_bench's uniform noise over the whole field deflates only to 0.70."""
    signal = base * (weight * 1200 / 3900)
    real = signal + rng.normal(0.0, 4.0, base.shape)
    imaginary = rng.normal(0.0, 4.0, base.shape)
    image = np.sqrt(real**2 + imaginary**2) + np.where(base > 0, rng.normal(0, 10, base.shape), 0)
    return bytes(np.clip(image, 0, 4095).astype("<u2").tobytes())


# -- page cache ---------------------------------------------------------------------------------


def can_drop_caches() -> str | None:
    """None when `echo 3 > /proc/sys/vm/drop_caches` works here, else why not."""
    try:
        os.sync()
        DROP_CACHES.write_text("3\n")
    except OSError as error:
        return f"{DROP_CACHES}: {error.strerror or error}"
    return None


def prepare_cache(folder: Path, cache: str) -> None:
    """warm: read every file once, then sync; cold: sync, then drop the page cache."""
    if cache == "warm":
        e2e.warm(folder)
    else:
        os.sync()
        DROP_CACHES.write_text("3\n")


# -- reads of the daemon's processes -----------------------------------------------------------


def io_counts(pid: int) -> tuple[int, int] | None:
    """(rchar, read_bytes) of `pid` from /proc/<pid>/io, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return None
    values = dict(line.split(": ") for line in text.splitlines() if ": " in line)
    return int(values["rchar"]), int(values["read_bytes"])


class ReadSampler:
    """Samples rchar and read_bytes of a process tree every 50 ms, keeping each pid's last
    value (a process that exits between two samples loses what it read since the last one).
    Counts from the first sample on: processes alive then count only what they read later."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start: dict[int, tuple[int, int]] = {}
        self.last: dict[int, tuple[int, int]] = {}
        self.samples = 0
        self._stop = threading.Event()
        self.sample()
        self.start = dict(self.last)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        for pid in e2e.family(self.pid):
            counts = io_counts(pid)
            if counts is not None:
                self.last[pid] = counts
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def finish(self) -> tuple[int, int]:
        """Stop (after one last sample); (rchar, read_bytes) summed since the first sample."""
        self._stop.set()
        self._thread.join()
        self.sample()
        zero = (0, 0)
        rchar = sum(v[0] - self.start.get(p, zero)[0] for p, v in self.last.items())
        disk = sum(v[1] - self.start.get(p, zero)[1] for p, v in self.last.items())
        return rchar, disk


# -- the daemon ----------------------------------------------------------------------------------


def zip_table_for(compression: str) -> str:
    """The `[zip]` table to give the daemon."""
    return f'\n[zip]\ncompression = "{compression}"\n'


# -- the measurements ----------------------------------------------------------------------------


@dataclass
class Run:
    kind: str  # typical, large
    link: str  # fast, or the rate in MB/s
    cache: str  # warm, cold
    case: str
    seconds: float
    mbytes: float  # session bytes / 1e6
    cpu: float
    rchar: int | None = None  # daemon: bytes read, all its processes
    disk: int | None = None  # daemon: bytes read from the block device (read_bytes)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.link, self.cache, self.case)


def stand_in_mode(link: str) -> str:
    """A stand-in mode for e2e.StandIn: headers-only, limited to `link` MB/s unless fast."""
    mode = f"headers-only@{link}"
    flags = ["--fast-headers-only"] + ([] if link == "fast" else ["--receive-rate", link])
    e2e.STAND_IN_FLAGS[mode] = flags
    return mode


def measure_zip_curl(
    kind: str, folder: Path, link: str, cache: str, level: int, files: int, nbytes: int
) -> Run:
    """`zip -<level> -r` then `curl -X POST -T zip` into a fresh stand-in on `link`."""
    zip_path = OUT / "session.zip"
    zip_path.unlink(missing_ok=True)
    prepare_cache(folder, cache)
    cmd = ["zip", f"-{level}", "-r", "-q", str(zip_path), folder.name]
    zipped = e2e.timed(cmd, folder.parent, OUT / "zip.out")
    if zipped.status != 0:
        raise SystemExit(f"zip failed ({zipped.status})")
    # The zip's pages stay in the cache (dirty), as they would for whoever types the commands.
    sent, stand_in_cpu, transfer = e2e.send_with_curl(
        zip_path, folder.name, files, stand_in_mode(link), "-T"
    )  # raises SystemExit unless HTTP 200 and the stand-in holds every file
    zip_mb = zip_path.stat().st_size / 1e6
    zip_path.unlink()
    return Run(
        kind, link, cache, f"zip -{level} + curl -T", zipped.seconds + sent.seconds,
        nbytes / 1e6, zipped.cpu + sent.cpu,
        details={
            "zip s": zipped.seconds, "curl s": sent.seconds, "curl transfer s": transfer,
            "zip MB": zip_mb, "stand-in CPU s": stand_in_cpu,
        },
    )  # fmt: skip


def measure_daemon(
    kind: str, folder: Path, link: str, cache: str, zip_table: str, files: int, nbytes: int
) -> Run:
    """The daemon from "settled; claimed" to "in done/" (with its receipt), plus its reads."""
    warmup = e2e.generate(e2e.WARMUP)
    root = e2e.STAND_IN_BASE[0] / "xnat-daemon"
    with e2e.StandIn(root, stand_in_mode(link)) as stand_in:
        daemon = e2e.Daemon(stand_in.url, "prearchive", stand_in.proc.pid, zip_table)
        try:
            _, _, done = daemon.deliver(warmup)  # starts the inspection workers
            e2e.folder_back(done, warmup)
            prepare_cache(folder, cache)
            sampler = ReadSampler(daemon.proc.pid)
            try:
                _, finished, done = daemon.deliver(folder)
            finally:
                rchar, disk = sampler.finish()  # before the daemon exits
            at_done = e2e.Snapshot.take(daemon.proc.pid, stand_in.proc.pid)
            daemon.claimed.wait(10)
            claim = daemon.line(rf"/{folder.name}: settled \(")
            if claim is None or daemon.at_claim is None:
                raise SystemExit(f"no 'settled ... claimed' line in {daemon.log_file.name}")
            receipt = done.parent / f"{folder.name}.report.txt"
            deadline = time.monotonic() + 10
            while not receipt.is_file() and time.monotonic() < deadline:
                time.sleep(0.05)
            held = stand_in.files_held(folder.name)
        finally:
            daemon.stop()
    in_done = e2e.session_bytes(done)
    e2e.folder_back(done, folder)
    if not receipt.is_file():
        raise SystemExit(f"no receipt {receipt} beside the session in done/")
    if held != files or in_done != (files, nbytes):
        raise SystemExit(f"the stand-in holds {held} of {files} files; done/ has {in_done}")
    cpu, stand_in_cpu, others = at_done.since(daemon.at_claim)
    return Run(
        kind, link, cache, "daemon", finished - claim.at, nbytes / 1e6, cpu, rchar, disk,
        details={
            "stand-in CPU s": stand_in_cpu, "other CPU s": others,
            "rchar samples": sampler.samples, "processes seen": len(sampler.last),
        },
    )  # fmt: skip


# -- the report ----------------------------------------------------------------------------------


def table(head: list[str], rows: list[list[str]], text_columns: int) -> None:
    """Print rows under head, the first `text_columns` left-aligned, the numbers right."""
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    for n, row in enumerate([head, *rows]):
        print(
            "  ".join(
                cell.ljust(w) if i < text_columns else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def link_name(link: str) -> str:
    return "fast" if link == "fast" else f"{link} MB/s"


def report(best: dict[tuple[str, str, str, str], Run], compression: str) -> None:
    groups = sorted(
        {key[:3] for key in best},
        key=lambda k: (k[0] != "typical", k[1] != "fast", k[1], k[2] != "warm"),
    )
    print(f"\nWall time, the daemon ([zip] compression: {compression}) and zip + curl\n")
    rows = []
    for kind, link, cache in groups:
        zip0 = best.get((kind, link, cache, "zip -0 + curl -T"))
        zip1 = best.get((kind, link, cache, "zip -1 + curl -T"))
        for case in CASES:
            run = best.get((kind, link, cache, case))
            if run is None:
                continue
            rows.append(
                [
                    kind, link_name(link), cache, case, f"{run.seconds:.2f}",
                    "-" if zip0 is None else f"{run.seconds / zip0.seconds:.2f}",
                    "-" if zip1 is None else f"{run.seconds / zip1.seconds:.2f}",
                    f"{run.mbytes / run.seconds:.0f}", f"{run.cpu:.2f}",
                ]
            )  # fmt: skip
    head = ["session", "link", "cache", "case", "wall s", "/ zip-0", "/ zip-1", "MB/s", "CPU s"]
    table(head, rows, 4)
    print("\nBytes read per session byte: the daemon's rchar (all its processes) / session bytes\n")
    rows = []
    for kind, link, cache in groups:
        run = best.get((kind, link, cache, "daemon"))
        if run is None or run.rchar is None:
            continue
        nbytes = run.mbytes * 1e6
        rows.append(
            [
                kind, link_name(link), cache, f"{run.mbytes:.0f}", f"{run.rchar / 1e6:.0f}",
                f"{run.rchar / nbytes:.3f}", f"{(run.disk or 0) / nbytes:.3f}",
                f"{TARGETS[kind]:.2f}",
            ]
        )  # fmt: skip
    head = ["session", "link", "cache", "MB", "rchar MB", "rchar/byte", "disk/byte", "target"]
    table(head, rows, 3)
    print()
    for run in sorted(
        best.values(), key=lambda r: (r.kind != "typical", r.link, r.cache != "warm", r.case)
    ):
        shown = ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in run.details.items()
        )
        print(f"{run.kind} {link_name(run.link)} {run.cache} {run.case}: {shown}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="typical,large", help="typical, large (default both)")
    parser.add_argument(
        "--links", default="fast,12", help="fast (no limit) and/or a rate in MB/s (default fast,12)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the best run is shown")
    parser.add_argument(
        "--compression",
        choices=("auto", "stored", "deflate"),
        default="auto",
        help="the daemon's [zip] compression (default auto)",
    )
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-cache runs")
    parser.add_argument(
        "--stand-in-dir",
        type=Path,
        help="where the stand-ins store uploads (default: /dev/shm when it has room)",
    )
    args = parser.parse_args()
    kinds = [k.strip() for k in args.sizes.split(",") if k.strip()]
    links = [k.strip() for k in args.links.split(",") if k.strip()]
    if any(k not in TARGETS for k in kinds):
        raise SystemExit("--sizes: typical and/or large")
    for link in links:
        if link != "fast" and not float(link) > 0:
            raise SystemExit("--links: fast and/or rates in MB/s")
    for tool in ("zip", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed for the baseline")
    started = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    e2e.OUT = OUT  # e2e's stand-ins, drop tree and curl files live under bench/out/link
    caches = ["warm"]
    why_not = None if args.no_cold else can_drop_caches()
    if not args.no_cold and why_not is None:
        caches.append("cold")
    folders = {kind: generate(kind) for kind in kinds}
    sizes = {kind: e2e.session_bytes(folder) for kind, folder in folders.items()}
    e2e.STAND_IN_BASE[0] = e2e.stand_in_base(args.stand_in_dir, max(b for _, b in sizes.values()))
    zip_table = zip_table_for(args.compression)
    compression = args.compression
    print(
        f"{os.cpu_count()} CPUs; stand-ins --fast-headers-only, storing in "
        f"{e2e.STAND_IN_BASE[0]}; links: {', '.join(link_name(k) for k in links)}; "
        f"caches: {', '.join(caches)}",
        flush=True,
    )
    if why_not is not None:
        print(f"note: no cold-cache runs, this machine does not allow dropping caches ({why_not})")
    for kind, (files, nbytes) in sizes.items():
        print(f"{kind}: {files} files, {nbytes / 1e6:,.0f} MB", flush=True)
    best: dict[tuple[str, str, str, str], Run] = {}
    try:
        for round_ in range(args.repeat):
            for kind in kinds:
                folder, (files, nbytes) = folders[kind], sizes[kind]
                for link in links:
                    for cache in caches:
                        for case in CASES:
                            if case == "daemon":
                                run = measure_daemon(
                                    kind, folder, link, cache, zip_table, files, nbytes
                                )
                            else:
                                level = int(case[5])
                                run = measure_zip_curl(
                                    kind, folder, link, cache, level, files, nbytes
                                )
                            extra = f", rchar/byte {run.rchar / nbytes:.3f}" if run.rchar else ""
                            print(
                                f"  round {round_ + 1} {kind} {link_name(link)} {cache} {case}: "
                                f"{run.seconds:.2f} s{extra}",
                                flush=True,
                            )
                            if run.key not in best or run.seconds < best[run.key].seconds:
                                best[run.key] = run
        report(best, compression)
    finally:
        if e2e.STAND_IN_BASE[0] != OUT:
            shutil.rmtree(e2e.STAND_IN_BASE[0], ignore_errors=True)
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
