"""`xnat-drop check FOLDER...`: the daemon's judgement, printed, with nothing uploaded or moved.

Exit codes: 0 every folder accepted, 1 at least one rejected, 2 usage or configuration error.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xnat_drop.adapters import configfile
from xnat_drop.adapters.workers import InspectionPool
from xnat_drop.adapters.xnat.client import connect
from xnat_drop.core import config as config_mod
from xnat_drop.core.errors import ConfigError, SessionChangedError, StorageError, XnatError
from xnat_drop.core.model import Policy, Verdict
from xnat_drop.core.report import violation_json
from xnat_drop.core.text import plural, size
from xnat_drop.service import servercheck
from xnat_drop.service.judge import Judgement, check_keywords, judge, relpath_for
from xnat_drop.service.servercheck import ServerAnswer
from xnat_drop.service.xnatfilter import FilterCache

EX_ACCEPTED = 0
EX_REJECTED = 1
EX_USAGE = 2


def run_check(config_path: Path, folders: Sequence[str], *, as_json: bool, server: bool) -> int:
    """Judge each folder (paths as the user typed them) and print the verdicts; returns the
    exit code."""
    env = dict(os.environ)
    try:
        cfg = configfile.load(config_path, env)
        check_keywords(cfg)
    except ConfigError as exc:
        print(f"xnat-drop check: configuration error: {exc}", file=sys.stderr)
        return EX_USAGE
    missing = [f for f in folders if not Path(f).is_dir() or Path(f).is_symlink()]
    if missing:
        print(f"xnat-drop check: not a folder: {', '.join(missing)}", file=sys.stderr)
        return EX_USAGE
    results: list[tuple[str, Judgement, ServerAnswer | None]] = []
    # Worker processes start in about 0.35 s: worth it from a couple of thousand files.
    with InspectionPool(min_files=2000) as pool:
        for folder in folders:
            relpath = relpath_for(Path(folder), cfg.paths.incoming, len(cfg.routing.layout))
            try:
                judgement = judge(Path(folder), relpath, cfg, pool)
            except SessionChangedError as exc:
                print(
                    f"xnat-drop check: {folder} changed while being read ({exc}); try again",
                    file=sys.stderr,
                )
                return EX_USAGE
            except StorageError as exc:  # a large session's file list: see dicom/spill.py
                print(f"xnat-drop check: {exc}", file=sys.stderr)
                return EX_USAGE
            results.append((folder, judgement, None))
    if server:
        try:
            results = _ask_server(cfg, env, results)
        except (ConfigError, XnatError) as exc:
            print(f"xnat-drop check: cannot ask XNAT: {exc}", file=sys.stderr)
            return EX_USAGE
    verdicts = [_verdict(folder, j, answer) for folder, j, answer in results]
    if as_json:
        _emit(json.dumps({"folders": verdicts}, indent=2, ensure_ascii=False))
    else:
        for item in verdicts:
            _emit(_text(item))
    return EX_ACCEPTED if all(v["accepted"] for v in verdicts) else EX_REJECTED


def _emit(text: str) -> None:
    """Print `text` in any locale without failing.

    Names read from disk that are not UTF-8 (Latin-1 from a Windows export) arrive as surrogate
    escapes, which a strict stdout (any xx_XX.UTF-8 locale) refuses with UnicodeEncodeError.
    They, and whatever else the output encoding lacks, are written as backslash escapes: in
    JSON these are valid `\\udcXX` escapes that decode back to the same name.
    """
    encoding = sys.stdout.encoding or "utf-8"
    sys.stdout.write((text + "\n").encode(encoding, "backslashreplace").decode(encoding))


def _ask_server(
    cfg: config_mod.Config,
    env: dict[str, str],
    results: list[tuple[str, Judgement, ServerAnswer | None]],
) -> list[tuple[str, Judgement, ServerAnswer | None]]:
    """Each judged folder with the answers of the server-side checks a delivery makes."""
    client = connect(cfg.xnat, env)
    filters = FilterCache(time.monotonic)
    try:
        return [
            (
                folder,
                judgement,
                servercheck.ask(client, cfg, Path(folder), judgement.verdict, filters),
            )
            for folder, judgement, _ in results
        ]
    finally:
        client.close()


def _verdict(folder: str, judgement: Judgement, answer: ServerAnswer | None) -> dict[str, Any]:
    """One folder in exactly the shape `check --json` promises.

    `upload_files` is what the daemon would send now: none for a rejected folder.
    `would_upload_files` is what it would send once the rejections are fixed (the files no
    rule leaves out), whatever the verdict. With `--server`, the verdict is the one after
    XNAT's series import filter, and `server` says per series what that filter drops.
    `resources` lists per resource label the files and bytes that would go as session
    resources (those no rule leaves out), whatever the verdict.
    """
    verdict = judgement.verdict if answer is None else answer.verdict
    extra = [] if answer is None else list(answer.refusals)
    violations = [*verdict.violations, *extra]
    target = verdict.target
    accepted = verdict.accepted and not extra
    server = (
        None
        if answer is None
        else {"series_import_filter": answer.filters, "series": list(answer.series)}
    )
    return {
        "folder": folder,
        "accepted": accepted,
        "target": None
        if target is None
        else {"project": target.project, "subject": target.subject, "session": target.session},
        "violations": [violation_json(v) for v in violations],
        "upload_files": len(verdict.upload) if accepted else 0,
        "would_upload_files": len(verdict.upload),
        "excluded_files": len(verdict.excluded),
        "resources": _resources(verdict),
        **({} if server is None else {"server": server}),
    }


def _resources(verdict: Verdict) -> list[dict[str, Any]]:
    """Per resource label, in order: its files and bytes."""
    labels: dict[str, dict[str, Any]] = {}
    for r in verdict.resources:
        entry = labels.setdefault(r.label, {"label": r.label, "files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += r.size
    return list(labels.values())


def _text(item: dict[str, Any]) -> str:
    target = item["target"]
    where = (
        f"XNAT {target['project']}/{target['subject']}/{target['session']}"
        if target
        else "no XNAT target"
    )
    head = "ACCEPTED" if item["accepted"] else "REJECTED"
    if item["accepted"]:
        counts = f"{plural(item['upload_files'], 'file')} to upload"
    elif item["would_upload_files"]:
        counts = f"nothing to upload; {plural(item['would_upload_files'], 'file')} once fixed"
    else:
        counts = "nothing to upload"
    counts += f", {item['excluded_files']:,} left out"
    lines = [f"{item['folder']}: {head} -> {where}: {counts}"]
    if item["resources"]:
        each = [
            f"{r['label']} ({plural(r['files'], 'file')}, {size(r['bytes'])})"
            for r in item["resources"]
        ]
        lines.append(f"  session resources: {', '.join(each)}")
    server = item.get("server")
    if server is not None:
        lines.append(f"  XNAT's series import filter: {server['series_import_filter'] or 'none'}")
    for v in item["violations"]:
        mark = "excluded" if v["policy"] == Policy.EXCLUDE.value else "rejects"
        lines.append(f"  [{v['rule']}] ({mark}) {v['message']}")
    return "\n".join(lines)
