"""The pieces of the resources step that need no XNAT: the streamed body and its MD5, XNAT's
duplicates answer, the version gate for prearchive resources."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from xnat_drop.adapters.fs.beneath import stamp
from xnat_drop.adapters.fs.filebody import FileBody
from xnat_drop.adapters.xnat.resourcecalls import _duplicates
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.model import ResourceFile, Target, Verdict
from xnat_drop.core.xnatconfig import XnatConfig
from xnat_drop.service.resourcestep import resources_unsupported


def test_the_body_streams_the_judged_bytes_once_and_hashes_them(tmp_path: Path) -> None:
    data = os.urandom(3 << 20) + b"tail"
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.bin").write_bytes(data)
    judged = stamp(os.stat(tmp_path / "r" / "a.bin"))
    body = FileBody(tmp_path, "r/a.bin", len(data), judged)
    try:
        assert len(body) == len(data)
        assert b"".join(body) == data
        assert body.md5 == hashlib.md5(data, usedforsecurity=False).hexdigest()
    finally:
        body.close()


def test_a_file_written_after_judging_or_a_link_never_leaves(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"one")
    judged = stamp(os.stat(tmp_path / "a.txt"))
    (tmp_path / "a.txt").write_bytes(b"two!")
    with pytest.raises(SessionChangedError):
        FileBody(tmp_path, "a.txt", 3, judged)
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    with pytest.raises(OSError):
        FileBody(tmp_path, "link.txt", 4, 0)


@pytest.mark.parametrize(
    ("answer", "duplicate"),
    [
        ('{"duplicates":["run1/ecg.tsv"]}', True),
        ('{"duplicates":[]}', False),
        ("", False),
        ("<html>ok</html>", False),
        ("{not json", False),
    ],
)
def test_xnats_duplicates_answer_is_read(answer: str, duplicate: bool) -> None:
    assert _duplicates(answer) is duplicate


def _xnat(destination: str) -> XnatConfig:
    return XnatConfig(
        "https://xnat.example.org",
        None,
        True,
        None,
        5.0,
        60.0,
        destination=destination,  # type: ignore[arg-type]
    )


VERDICT = Verdict(
    Target("P", "S", "E"),
    (),
    (),
    (),
    (),
    resources=(ResourceFile("physio", "a.tsv", "resources/physio/a.tsv", 3),),
)


@pytest.mark.parametrize(
    ("destination", "version", "refused"),
    [
        ("prearchive", "1.8.3", True),
        ("prearchive", "1.7.6", True),
        ("prearchive", "1.8.4", False),
        ("prearchive", "1.8.10", False),
        ("prearchive", "", False),
        ("archive", "1.8.3", False),
    ],
)
def test_prearchive_resources_need_xnat_1_8_4(
    destination: str, version: str, refused: bool
) -> None:
    found = resources_unsupported(_xnat(destination), version, VERDICT)
    assert (found is not None) is refused
    if found is not None:
        assert "1.8.4" in found.sentence and found.rule == "resources-unsupported"
