"""C-STORE: the daemon's xnat.transport = "cstore" against DCMTK's storescu, and its default
zip import against zip + curl, each into a fresh XNAT stand-in with its DICOM receiver.

Run from the repository root: `.venv/bin/python bench/cstore_bench.py` (see bench/README.md).

For e2e_bench's 2,000-file 204 MB MR session (`--size 2GB`: its 16,000-file one; `--size
smoke`: 300 small files, to try the script) each round runs, each case against a new stand-in
process (`xnat-standin --dicom-port 0`, faithful by default: C-STORE always takes the
stand-in's faithful per-object path, so the HTTP cases use the same mode unless
--http-stand-in says otherwise):

- `storescu -aec XNAT +sd +r 127.0.0.1 PORT folder` (DCMTK), as built, and again with
  TCP_NODELAY=1 in its environment (DCMTK then turns off Nagle's algorithm);
- `zip -0 -r` + `curl -T zip` to the import service, as e2e_bench runs them;
- the real daemon (`xnat-drop run`, e2e_bench's configuration) with `xnat.transport =
  "cstore"` and `[cstore] host, port` set to the stand-in's receiver, from its log line
  "settled ...; claimed as" to the folder in done/ (send, find the prearchive session, build,
  verify), after a warm-up session;
- the same daemon with the default `transport = "import"`.

For each run: wall time, CPU of the command or of all the daemon's processes, the stand-in's
CPU, the CPU the rest of the machine used meanwhile, and for the daemon the peak PSS summed over
all its processes (sampled every 50 ms from the drop to done/). Each case runs --repeat times,
the cases in turns; the shortest run of each is shown.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The daemon and stand-in under test are this checkout's, whatever the venv's install points at.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(HERE.parent / "daemon"), *filter(None, [os.environ.get("PYTHONPATH")])]
)
sys.path.insert(0, str(HERE.parent / "daemon"))

import e2e_bench  # noqa: E402
from e2e_bench import (  # noqa: E402
    PASSWORD,
    SIZES,
    USER,
    WARMUP,
    Daemon,
    LogLine,
    Result,
    SessionSize,
    Snapshot,
    StandIn,
    folder_back,
    generate,
    machine_busy,
    print_table,
    session_bytes,
    stand_in_base,
    timed,
    warm,
)
from memory_bench import Sampler, _delivered  # noqa: E402

from xnat_standin.scpstate import MAX_RECORDS  # noqa: E402

OUT = HERE / "out" / "cstore"
# --size smoke: small objects (8 KB of pixels), a quick try of the whole script.
SMOKE = SessionSize("CSTORE_SMOKE", 300, 64)
STORESCU = "/usr/bin/storescu"  # DCMTK's, not pynetdicom's storescu in the venv
CALLED_AE = "XNAT"  # the stand-in's receiver
BUSY = 0.5  # CPU seconds of other processes above which a row's figures are suspect


# -- the stand-in with its DICOM receiver --------------------------------------------------


def dicom_mode(mode: str) -> str:
    """e2e_bench's stand-in mode `mode` with the DICOM receiver on a free port."""
    name = f"{mode}+dicom"
    e2e_bench.STAND_IN_FLAGS[name] = [*e2e_bench.STAND_IN_FLAGS[mode], "--dicom-port", "0"]
    return name


def _get(stand_in: StandIn, path: str) -> Any:
    request = urllib.request.Request(f"{stand_in.url}{path}")
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def dicom_port(stand_in: StandIn) -> int:
    """The port of the stand-in's receiver, as XNAT lists it (`GET /xapi/dicomscp`)."""
    rows = _get(stand_in, "/xapi/dicomscp")
    return int(next(r["port"] for r in rows if r["aeTitle"] == CALLED_AE))


def objects_held(stand_in: StandIn) -> int:
    """DICOM files the stand-in holds in any prearchive or archive session (storescu's objects
    route by their own headers: to the Unassigned prearchive, session SUBJ01)."""
    state = stand_in.state()
    rows = state["prearchive"] + state["archive"]
    return sum(len(files) for row in rows for files in row["scans"].values())


def receiver_counts(stand_in: StandIn) -> tuple[int, int]:
    """(associations accepted, C-STORE requests answered) by the stand-in's receiver; it keeps
    the last MAX_RECORDS of each."""
    dicom = stand_in.state()["dicom"]
    return sum(a["accepted"] for a in dicom["associations"]), len(dicom["stores"])


# -- storescu --------------------------------------------------------------------------------


def measure_storescu(
    label: str, folder: Path, mbytes: float, files: int, mode: str, nodelay: bool
) -> Result:
    """DCMTK's storescu sending the folder to a fresh stand-in's receiver."""
    warm(folder)
    with StandIn(e2e_bench.STAND_IN_BASE[0] / "xnat-storescu", mode) as stand_in:
        port = dicom_port(stand_in)
        env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
        if nodelay:
            env["TCP_NODELAY"] = "1"
        cmd = [STORESCU, "-aec", CALLED_AE, "+sd", "+r", "127.0.0.1", str(port), folder.name]
        before = stand_in.cpu()
        run = timed(cmd, folder.parent, OUT / "storescu.out", (stand_in.proc.pid,), env)
        stand_in_cpu = stand_in.cpu() - before
        held = objects_held(stand_in)
    errors = (OUT / "storescu.err").read_text(errors="replace").strip()
    if run.status != 0 or held != files or errors:
        raise SystemExit(f"storescu failed ({run.status}; {held} of {files} objects): {errors}")
    return Result(
        label,
        "storescu, TCP_NODELAY=1" if nodelay else "storescu",
        run.seconds,
        mbytes,
        cpu=run.cpu,
        stand_in_cpu=stand_in_cpu,
        others_cpu=run.others,
        details={"objects/s": files / run.seconds},
    )


# -- the daemon ------------------------------------------------------------------------------


def line_after(daemon: Daemon, first: LogLine, pattern: str) -> LogLine | None:
    """The first log line from `first` on that matches `pattern` (a regular expression)."""
    lines = list(daemon.lines)
    return next((x for x in lines[lines.index(first) :] if re.search(pattern, x.text)), None)


def last_stored(root: Path, label: str) -> float | None:
    """When the stand-in wrote the last object of session `label` (the newest mtime)."""
    found = root.glob(f"prearchive/*/*/{label}/SCANS/*/DICOM/*")
    return max((path.stat().st_mtime for path in found), default=None)


def measure_daemon(
    label: str, folder: Path, mbytes: float, files: int, mode: str, transport: str
) -> Result:
    """`xnat-drop run` with `transport`: from "settled; claimed" to "in done/"."""
    warmup = generate(WARMUP)
    with StandIn(e2e_bench.STAND_IN_BASE[0] / f"xnat-daemon-{transport}", mode) as stand_in:
        port = dicom_port(stand_in)
        extra = f'\n[cstore]\nhost = "127.0.0.1"\nport = {port}\ncalled_ae = "{CALLED_AE}"\n'
        daemon = Daemon(
            stand_in.url,
            "prearchive",
            stand_in.proc.pid,
            extra if transport == "cstore" else "",
            transport=transport,
        )
        try:
            config = (OUT / "xnat-drop.toml").read_text()
            if f'\ntransport = "{transport}"\n' not in config:
                raise SystemExit(f"xnat.transport is not {transport} in {OUT / 'xnat-drop.toml'}")
            _, _, done = daemon.deliver(warmup)  # starts the inspection workers
            folder_back(done, warmup)
            associations_before, stored_before = receiver_counts(stand_in)
            warm(folder)
            sampler = Sampler(daemon.proc.pid)
            sampler.start()
            t0, finished, done = daemon.deliver(folder)
            at_done = Snapshot.take(daemon.proc.pid, stand_in.proc.pid)
            samples = sampler.stop()
            daemon.claimed.wait(10)
            claim = daemon.line(rf"/{folder.name}: settled \(")
            if claim is None or daemon.at_claim is None:
                raise SystemExit(f"no 'settled ... claimed' line in {daemon.log_file.name}")
            receipt = done.parent / f"{folder.name}.report.json"
            deadline = time.monotonic() + 10
            while not receipt.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            delivered = _delivered(receipt, files)
            held = stand_in.files_held(folder.name)
            associations, stored = receiver_counts(stand_in)
            associations -= associations_before
            counted = stored < MAX_RECORDS  # else the oldest records are gone
            stored -= stored_before
            marks = [
                ("inspect+rules", claim),
                ("checks", line_after(daemon, claim, rf"/{folder.name}: inspected ")),
                ("send", line_after(daemon, claim, r": (uploading|sending) \d+ ")),
                ("after send", last_stored(stand_in.root, folder.name)),
                ("finish", line_after(daemon, claim, rf"/{folder.name}: delivered ")),
            ]
        finally:
            daemon.stop()
            # Daemon names its log by destination: keep each transport's own.
            shutil.copyfile(daemon.log_file.name, OUT / f"daemon-{transport}.log")
            shutil.copyfile(OUT / "xnat-drop.toml", OUT / f"xnat-drop-{transport}.toml")
    folder_back(done, folder)
    for path in (receipt, receipt.with_suffix(".txt")):
        path.unlink(missing_ok=True)
    expected = files if transport == "cstore" else 0
    used = associations > 0 and (stored >= expected or not counted)
    if transport != "cstore":
        used = associations == 0 and stored == 0
    if not delivered or held != files or not used:
        raise SystemExit(
            f"{folder.name} by {transport}: receipt says delivered: {delivered}; the stand-in "
            f"holds {held} of {files} files; its receiver accepted {associations} associations "
            f"and answered {stored} C-STORE requests (expected {expected})"
        )
    retried = [line.text for line in daemon.lines[daemon.lines.index(claim) :]]
    retried = [text for text in retried if " WARNING " in text or " ERROR " in text]
    for text in retried:
        print(f"    daemon ({transport}) logged: {text[:200]}", flush=True)
    cpu, stand_in_cpu, others = at_done.since(daemon.at_claim)
    known = [(name, at if isinstance(at, float) else at.at) for name, at in marks if at]
    phases = {
        f"{name} s": stop - start
        for (name, start), (_, stop) in zip(known, [*known[1:], ("", finished)], strict=True)
    }
    return Result(
        label,
        f"daemon, transport={transport}",
        finished - claim.at,
        mbytes,
        cpu=cpu,
        stand_in_cpu=stand_in_cpu,
        others_cpu=others,
        pid=daemon.proc.pid,
        details={
            "PSS MiB peak all processes": max(s.pss for s in samples),
            "PSS MiB peak main": max(s.main_pss for s in samples),
            "processes": max(s.processes for s in samples),
            **phases,
            "t0 -> claim s (settle 1 s)": claim.at - t0,
            # More stores than objects: the daemon sent some again (a retry; see its log).
            **({"C-STORE requests": stored} if counted and stored > expected else {}),
            **({"warnings in the log": len(retried)} if retried else {}),
        },
    )


# -- one size --------------------------------------------------------------------------------


@dataclass
class Options:
    dicom: str  # the stand-in mode of the C-STORE cases (always with the receiver)
    http: str  # the stand-in mode of the HTTP cases (with the receiver too)
    repeat: int


def measure_size(size: SessionSize, options: Options) -> list[Result]:
    """Every case, options.repeat rounds in turns; the shortest run of each case."""
    folder = generate(size)
    files, nbytes = session_bytes(folder)
    mbytes = nbytes / 1e6
    label = f"{mbytes:,.0f} MB" if mbytes >= 10 else f"{mbytes:,.1f} MB"
    print(f"{size.name}: {files} files, {label}", flush=True)
    best: dict[str, Result] = {}

    def keep(result: Result) -> None:
        busy = f" (other processes used {result.others_cpu:.1f} CPU s)" if _busy(result) else ""
        print(f"  {result.case}: {result.seconds:.2f} s{busy}", flush=True)
        if result.case not in best or result.seconds < best[result.case].seconds:
            best[result.case] = result

    for round_ in range(options.repeat):
        print(f" round {round_ + 1} of {options.repeat}", flush=True)
        for nodelay in (False, True):
            keep(measure_storescu(label, folder, mbytes, files, options.dicom, nodelay))
        keep(measure_daemon(label, folder, mbytes, files, options.dicom, "cstore"))
        baseline, _ = e2e_bench.measure_baseline(label, folder, mbytes, files, options.http, False)
        (OUT / "session.zip").unlink(missing_ok=True)
        for result in baseline:
            if "--data-binary" not in result.case:
                keep(result)
        keep(measure_daemon(label, folder, mbytes, files, options.http, "import"))
    cstore, imported = best["daemon, transport=cstore"], best["daemon, transport=import"]
    cstore.ratio = cstore.seconds / best["storescu"].seconds
    cstore.details["/ storescu TCP_NODELAY=1"] = (
        cstore.seconds / best["storescu, TCP_NODELAY=1"].seconds
    )
    imported.ratio = imported.seconds / best["baseline: zip + curl -T zip"].seconds
    order = [
        "storescu",
        "storescu, TCP_NODELAY=1",
        "daemon, transport=cstore",
        "baseline: zip -0 -r",
        "baseline: curl -T zip",
        "baseline: zip + curl -T zip",
        "daemon, transport=import",
    ]
    return [best[case] for case in order]


def _busy(result: Result) -> bool:
    return result.others_cpu is not None and result.others_cpu > BUSY


def quiet_check(seconds: float = 2.0) -> float:
    """CPU seconds per second the machine spends busy while this script waits."""
    before, own = machine_busy(), time.process_time()
    time.sleep(seconds)
    return (machine_busy() - before - (time.process_time() - own)) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size",
        choices=[*SIZES, "smoke"],
        default="200MB",
        help="e2e_bench's session (default 200MB: 2,000 files); smoke: 300 small files",
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="rounds; the best run of each case is shown"
    )
    parser.add_argument(
        "--http-stand-in",
        choices=list(e2e_bench.STAND_IN_FLAGS),
        default="faithful",
        help="the stand-in's mode for the HTTP cases (default faithful, as C-STORE always is)",
    )
    parser.add_argument(
        "--stand-in-dir",
        type=Path,
        help="where the stand-ins store what they receive (default: /dev/shm when it has room)",
    )
    args = parser.parse_args()
    for tool in (STORESCU, "zip", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (DCMTK's storescu: apt install dcmtk)")
    size = SMOKE if args.size == "smoke" else SIZES[args.size]
    started = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    e2e_bench.OUT = OUT  # the drop tree, state, config, zip and logs of e2e_bench's helpers
    folder = generate(size)
    generate(WARMUP)
    base = stand_in_base(args.stand_in_dir, session_bytes(folder)[1])
    e2e_bench.STAND_IN_BASE[0] = base
    options = Options(dicom_mode("faithful"), dicom_mode(args.http_stand_in), args.repeat)
    load = quiet_check()
    print(
        f"{os.cpu_count()} CPUs; stand-in faithful for C-STORE, {args.http_stand_in} for HTTP, "
        f"each with its DICOM receiver, storing in {base}; sessions read once (page cache "
        f"warm) and synced before every timed run; machine busy {load:.2f} CPU/s before start",
        flush=True,
    )
    try:
        results = measure_size(size, options)
    finally:
        if base != OUT:
            shutil.rmtree(base, ignore_errors=True)
    print_table(
        results,
        f"C-STORE and zip import (stand-in: C-STORE faithful, HTTP {args.http_stand_in}; "
        f"best of {args.repeat})",
    )
    cstore, imported = results[2], results[6]
    print("\nratios (best runs):")
    print(f"  daemon C-STORE / storescu                 {cstore.ratio:.2f}")
    print(
        "  daemon C-STORE / storescu TCP_NODELAY=1   "
        f"{cstore.details['/ storescu TCP_NODELAY=1']:.2f}"
    )
    print(f"  daemon import / (zip -0 -r + curl -T)     {imported.ratio:.2f}")
    print("peak PSS summed over the daemon's processes, from the drop to done/ (MiB):")
    for result in (cstore, imported):
        print(
            f"  {result.case}: {result.details['PSS MiB peak all processes']:.1f} "
            f"(main process {result.details['PSS MiB peak main']:.1f})"
        )
    busy = [r for r in results if _busy(r)]
    if load > 0.2 or busy:
        print(
            f"\nnote: the machine was busy (before start {load:.2f} CPU/s; "
            f"{', '.join(f'{r.case}: {r.others_cpu:.1f} CPU s' for r in busy) or 'no shown row'}"
            " used by other processes): figures disturbed, run again on a quiet machine"
        )
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
