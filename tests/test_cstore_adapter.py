"""The C-STORE adapter (adapters/dicom/cstore.py) against the stand-in's DICOM receiver.

Real files from pydicom's test set over loopback; what the receiver stored is read back from
the stand-in's prearchive.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

pytest.importorskip("pynetdicom", reason="the cstore extra (pynetdicom) is missing")

from xnat_drop.adapters.dicom import cstore
from xnat_drop.core.errors import (
    ReceiverRefusedError,
    XnatRejectedError,
    XnatTransientError,
)
from xnat_drop.core.model import FileFacts, FileKind
from xnat_standin import DicomReceiver, Emulator, ScpFault

from data import STUDY_133, copy_study
from emulator_helpers import PASSWORD, USER

ROUTE = "Project: P1 Subject: S01 Session: S01_MR1 AA: false"
PRESENTATION_STATE = "1.2.840.10008.5.1.4.1.1.11.1"  # not in XNAT's CUIDS


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    users = {USER: PASSWORD, "admin": "admin"}
    with Emulator(
        tmp_path / "xnat", users=users, projects=["P1"], dicom_port=0, idle_build_seconds=60
    ) as emulator:
        yield emulator


def receiver(emu: Emulator, **changes: str) -> cstore.Receiver:
    given = {"called_ae": emu.ae_title, **changes}
    return cstore.Receiver("127.0.0.1", emu.dicom_port, timeout=10, **given)


def facts(folder: Path, files: list[Path]) -> tuple[FileFacts, ...]:
    return tuple(
        FileFacts(p.relative_to(folder).as_posix(), p.stat().st_size, FileKind.DICOM) for p in files
    )


def study(tmp_path: Path) -> tuple[Path, tuple[FileFacts, ...]]:
    folder = tmp_path / "session"
    return folder, facts(folder, copy_study(folder, STUDY_133))


def send(emu: Emulator, folder: Path, files: tuple[FileFacts, ...], **changes: str) -> list[int]:
    counts: list[int] = []
    needed = cstore.contexts(folder, files)
    cstore.store(receiver(emu, **changes), folder, files, needed, ROUTE, counts.append)
    return counts


def test_each_file_is_routed_by_patient_comments_and_the_source_is_untouched(
    emu: Emulator, tmp_path: Path
) -> None:
    folder, files = study(tmp_path)
    before = {f.path: (folder / f.path).read_bytes() for f in files}
    assert send(emu, folder, files) == [1, 2, 3, 4]
    [session] = emu.prearchive()
    assert (session.project, session.subject, session.folder) == ("P1", "S01", "S01_MR1")
    assert session.file_count == 4
    assert {f.path: (folder / f.path).read_bytes() for f in files} == before
    [row] = emu.store.rows()
    stored = sorted((emu.store.row_dir(row) / "SCANS").rglob("*.dcm"))
    assert len(stored) == 4
    for path in stored:
        assert pydicom.dcmread(path).PatientComments == ROUTE


def test_a_deflated_file_goes_out_inflated(emu: Emulator, tmp_path: Path) -> None:
    folder, files = study(tmp_path)
    path = folder / files[0].path
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = cstore.DEFLATED
    dataset.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == cstore.DEFLATED
    assert path.read_bytes().count(b"ORIGINAL") == 0  # the data set is compressed on disk
    files = facts(folder, [folder / f.path for f in files])
    assert any(c.syntax == cstore.EXPLICIT_LE for c in cstore.contexts(folder, files))
    assert send(emu, folder, files) == [1, 2, 3, 4]
    assert all(s.stored for s in emu.dicom_stores())
    [row] = emu.store.rows()
    stored = sorted((emu.store.row_dir(row) / "SCANS").rglob("*.dcm"))
    syntaxes = {str(pydicom.dcmread(p).file_meta.TransferSyntaxUID) for p in stored}
    assert cstore.DEFLATED not in syntaxes and cstore.EXPLICIT_LE in syntaxes


def test_a_bare_data_set_without_preamble_or_file_meta_is_sent(
    emu: Emulator, tmp_path: Path
) -> None:
    """XNAT takes a bare data set (implicit VR little endian, no "DICM"): so does the sender,
    whose context then comes from the data set's own encoding."""
    folder, files = study(tmp_path)
    path = folder / files[0].path
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, True
    write_dataset(out, pydicom.dcmread(path))
    path.write_bytes(out.getvalue())
    assert path.read_bytes()[128:132] != b"DICM"
    files = facts(folder, [folder / f.path for f in files])
    assert send(emu, folder, files) == [1, 2, 3, 4]
    bare = next(
        s
        for s in emu.dicom_stores()
        if s.sop_instance_uid == pydicom.dcmread(path, force=True).SOPInstanceUID
    )
    assert bare.transfer_syntax == cstore.IMPLICIT_LE


def test_an_unlisted_sop_class_is_refused_before_anything_is_sent(
    emu: Emulator, tmp_path: Path
) -> None:
    folder, files = study(tmp_path)
    path = folder / files[-1].path
    dataset = pydicom.dcmread(path)
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = PRESENTATION_STATE
    dataset.save_as(path)
    files = facts(folder, [folder / f.path for f in files])
    with pytest.raises(cstore.UnsupportedError) as refused:
        send(emu, folder, files)
    assert str(refused.value).startswith("Grayscale Softcopy Presentation State Storage in ")
    assert refused.value.files == 1
    assert emu.dicom_stores() == []


def test_a_calling_ae_off_the_whitelist_is_a_refusal_to_pause_on(
    emu: Emulator, tmp_path: Path
) -> None:
    emu.set_dicom_receiver(DicomReceiver(whitelist_enabled=True, whitelist=("OTHER",)))
    folder, files = study(tmp_path)
    with pytest.raises(ReceiverRefusedError, match="calling AE title XNAT_DROP"):
        send(emu, folder, files)
    with pytest.raises(ReceiverRefusedError):
        cstore.echo(receiver(emu))
    with pytest.raises(ReceiverRefusedError, match="no enabled AE title NOBODY"):
        cstore.echo(receiver(emu, called_ae="NOBODY"))


def test_statuses(emu: Emulator, tmp_path: Path) -> None:
    folder, files = study(tmp_path)
    emu.inject_dicom(ScpFault(status=0xA700, nth=2))
    with pytest.raises(XnatTransientError, match="0xA700"):
        send(emu, folder, files)
    emu.clear_dicom_faults()
    emu.inject_dicom(ScpFault(abort=True, nth=1))
    with pytest.raises(XnatTransientError):
        send(emu, folder, files)
    emu.clear_dicom_faults()
    emu.inject_dicom(
        ScpFault(status=0xC000, nth=3, error_comment="Bad object 1.2.840.113619.2.55.3.1234")
    )
    with pytest.raises(XnatRejectedError, match="0xC000") as refused:
        send(emu, folder, files)
    assert "1.2.840.113619" not in str(refused.value)
    emu.clear_dicom_faults()
    emu.inject_dicom(ScpFault(status=0xB007, nth=1))
    assert send(emu, folder, files) == [1, 2, 3, 4]


# pynetdicom 3.0.4 leaves the socket of a refused TCP connection to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_c_echo_and_an_unreachable_receiver(emu: Emulator) -> None:
    cstore.echo(receiver(emu))
    with pytest.raises(XnatTransientError):
        cstore.echo(cstore.Receiver("127.0.0.1", 1, timeout=2))


def test_more_than_128_contexts_are_split_over_associations() -> None:
    needed = [cstore.Context(f"1.2.3.{i}", cstore.EXPLICIT_LE) for i in range(300)]
    groups = cstore.batches(reversed(needed))
    assert [len(g) for g in groups] == [128, 128, 44]
    assert {c for g in groups for c in g} == set(needed)


def test_names_of_standard_and_private_uids() -> None:
    assert cstore.uid_words("1.2.840.10008.5.1.4.1.1.4", "SOP class") == "MR Image Storage"
    assert cstore.uid_words("1.3.12.2.1107.5.9.1", "SOP class").startswith("a private")
