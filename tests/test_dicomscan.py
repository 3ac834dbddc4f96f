"""dicomscan.py (the fast header reader) against pydicom: the same FileFacts, file for file.

Every comparison reads the same file twice, with `FileClassifier(fast=False)` (pydicom only, as
before dicomscan) and `FileClassifier()` (dicomscan where it is sure, pydicom otherwise), and
asks for equal FileFacts: kind, note, header. Warnings are errors in this test suite but not in
the daemon, and pydicom's answer can depend on that (a warning becomes an exception), so the
library files and the crafted ones are compared in both settings.

The files: every DICOM file of pydicom's test set (with dicomdirtests), of pydicom-data and of
nibabel's nicom data, sessions from the demo's sample writer and from both benchmarks'
generators, copies of many of them cut at many offsets, and files crafted byte by byte for
the odd cases (values at the edges of each conversion rule, sequences, items, delimiters).
"""

from __future__ import annotations

import gzip
import importlib.util
import random
import struct
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pydicom
import pydicom.config
import pytest
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.filereader import ENCODED_VR, data_element_generator
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from xnat_drop.adapters.dicom import dicomscan, openfile, plainheader
from xnat_drop.adapters.dicom import inspection as inspect_module
from xnat_drop.adapters.dicom.fileclassifier import FileClassifier
from xnat_drop.adapters.fs.beneath import Beneath, Dir
from xnat_drop.core.model import FileFacts, FileKind
from xnat_standin.demo.samples import SECONDARY_CAPTURE, SeriesSpec, write_session

from data import NICOM_DATA, PYDICOM_FILES, write_non_image_objects

BENCH = Path(__file__).resolve().parent.parent / "bench"
# Routing sources, PHI tags and templates read these; a few have VRs dicomscan leaves to
# pydicom (AE, US, SQ), so files holding them must fall back.
KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyDate",
    "StudyTime",
    "PatientComments",
    "StudyComments",
    "AdditionalPatientHistory",
    "StudyDescription",
    "OtherPatientNames",
    "AccessionNumber",
    "InstanceNumber",
    "SliceThickness",
    "PatientAge",
    "ImageType",
    "SeriesNumber",
)
ODD_KEYWORDS = ("StationAETitle", "Columns", "ReferencedImageSequence", "PatientName")
KEYWORD_SETS = ((), KEYWORDS, ODD_KEYWORDS)
MR = b"1.2.840.10008.5.1.4.1.1.4"
EXPLICIT = b"1.2.840.10008.1.2.1"


def classify_with(reader: FileClassifier, path: Path, keywords: tuple[str, ...] = ()) -> FileFacts:
    """`reader`'s facts of the file at `path` (opened through its folder, as inspect does)."""
    with Dir.open(path.parent) as folder, Beneath(folder) as files:
        return reader.classify(files, path.name, path.name, frozenset(), keywords)


def read_both(path: Path, keywords: tuple[str, ...] = ()) -> tuple[FileFacts, FileFacts, bool]:
    """(pydicom's facts, the fast reader's facts, whether dicomscan read the header)."""
    slow = FileClassifier(fast=False)
    fast = FileClassifier()
    assert fast.fast, "the fast path is off: pydicom's settings changed?"
    expected = classify_with(slow, path, keywords)
    found = classify_with(fast, path, keywords)
    return expected, found, fast.fast_files == 1


def compare(path: Path, keywords: tuple[str, ...] = (), mode: str = "error") -> bool:
    """Assert both readers agree on `path` with warnings as errors or ignored (as in the
    daemon); returns whether dicomscan read it."""
    with warnings.catch_warnings():
        warnings.simplefilter(mode)
        expected, found, fast = read_both(path, keywords)
    assert found == expected, (path, keywords, mode)
    return fast


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every file of pydicom's, pydicom-data's and nibabel's DICOM test data (gunzipped)."""
    found = pydicom.data.get_testdata_file("emri_small_jpeg_2k_lossless.dcm", download=False)
    assert found, "pydicom-data is not installed"
    pydicom_data = Path(str(found)).parent
    files = [p for top in (PYDICOM_FILES, pydicom_data, NICOM_DATA) for p in sorted(top.rglob("*"))]
    unpacked = tmp_path_factory.mktemp("gunzipped")
    result = []
    for path in files:
        if not path.is_file():
            continue
        if path.name.endswith(".gz"):
            target = unpacked / path.name.removesuffix(".gz")
            target.write_bytes(gzip.decompress(path.read_bytes()))
            result.append(target)
        result.append(path)
    # Non-image objects (SRs, an encapsulated PDF, Siemens CSA Non-Image, Raw Data) built from
    # real files: no pixel data, some with image attributes left.
    objects = write_non_image_objects(tmp_path_factory.mktemp("nonimage"), NICOM_DATA / "0.dcm")
    return result + sorted(objects.values())


@pytest.mark.parametrize("mode", ["error", "ignore"])
def test_every_library_file_reads_the_same(library: list[Path], mode: str) -> None:
    counts: Counter[str] = Counter()
    for path in library:
        for keywords in KEYWORD_SETS:
            fast = compare(path, keywords, mode)
            if path.read_bytes()[128:132] == b"DICM":
                counts[f"{'fast' if fast else 'pydicom'} {len(keywords)}"] += 1
    print(f"\nlibrary files ({len(library)}), warnings {mode}:", dict(sorted(counts.items())))
    # Most of the test data is explicit VR little endian with plain values.
    assert counts["fast 0"] >= 170
    assert counts[f"fast {len(KEYWORDS)}"] >= 150
    assert counts[f"pydicom {len(KEYWORDS)}"] >= 40  # big endian, implicit VR, odd values


def test_library_files_cut_short_read_the_same(library: list[Path], tmp_path: Path) -> None:
    """Cut at every element boundary of the header (and around it), inside values and the
    pixel data: dicomscan must give pydicom's answer or leave the file to pydicom."""
    sources = [p for p in library if p.stat().st_size < 3_000_000 and _part10(p)]
    rng = random.Random(5)
    cut = tmp_path / "cut.dcm"
    taken = Counter[bool]()
    for source in _diverse(sources, 40):
        data = source.read_bytes()
        for offset in _cuts(data, rng):
            cut.write_bytes(data[:offset])
            taken[compare(cut, KEYWORDS[:4])] += 1
    print("\ncut copies: read by dicomscan", taken[True], "left to pydicom", taken[False])
    assert taken[True] > 300 and taken[False] > 300


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("samples")
    specs = [
        SeriesSpec(1, "localizer", images=2),
        SeriesSpec(2, "t1 mprage sag", images=2, rows=16, columns=16),
        SeriesSpec(3, "MoCoSeries", ("DERIVED", "PRIMARY", "MOCO"), images=2),
        SeriesSpec(4, "screen", ("DERIVED", "SECONDARY"), 1, sop_class_uid=SECONDARY_CAPTURE),
        SeriesSpec(5, "x", ("ORIGINAL",), images=1, rows=1, columns=1),
        SeriesSpec(1001, "ep2d_diff_mddw_30_p2_TRACEW", ("DERIVED", "PRIMARY", "DIFFUSION")),
    ]
    return write_session(folder, specs, patient_id="SUBJ 01", rng=random.Random(3))


def test_sample_writer_sessions_read_the_same(samples: list[Path]) -> None:
    for path in samples:
        for keywords in KEYWORD_SETS:
            fast = compare(path, keywords)
            assert fast or keywords == ODD_KEYWORDS  # Columns (US) is in every image


def test_sample_files_cut_everywhere_in_the_header(samples: list[Path], tmp_path: Path) -> None:
    data = samples[0].read_bytes()
    pixel = data.index(b"\xe0\x7f\x10\x00")
    cut = tmp_path / "cut.dcm"
    for offset in [*range(pixel + 40), len(data) - 1, len(data) // 2]:
        cut.write_bytes(data[:offset])
        compare(cut, ("PatientName", "PatientID"))


def _bench_module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))  # the benchmarks import their shared modules
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_benchmark_sessions_read_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The e2e benchmark's scanner-like headers (ISO_IR 100) and the inspection benchmark's
    Siemens headers, whose CSA blocks make them longer than one first read (HEAD_READ): the
    first file of a task is read by pydicom, which learns how far to read the next ones."""
    e2e = _bench_module("e2e_bench", monkeypatch)
    numpy_rng = e2e.np.random.default_rng(1)
    e2e.write_series(
        tmp_path / "e2e", 16, 6, "ep2d_bold_rest", 3, "1.2.826.0.1.3680043.8.498.1", numpy_rng
    )
    siemens = _bench_module("inspect_bench", monkeypatch)
    template = siemens.siemens_template()
    siemens.write_series(
        tmp_path / "siemens", template, 3, "t1_mprage_sag", 4, "1.2.3", random.Random(2)
    )
    for folder, header_fits in ((tmp_path / "e2e", True), (tmp_path / "siemens", False)):
        paths = sorted(folder.rglob("*.dcm"))
        relpaths = [str(p.relative_to(folder)) for p in paths]
        for keywords in ((), KEYWORDS):
            slow = FileClassifier(fast=False)
            fast = FileClassifier()
            with Dir.open(folder) as root, Beneath(root) as files:
                expected = [slow.classify(files, r, r, frozenset(), keywords) for r in relpaths]
                found = [fast.classify(files, r, r, frozenset(), keywords) for r in relpaths]
            assert found == expected
            assert all(f.kind is FileKind.DICOM for f in found)
            assert fast.fast_files == len(paths) - (0 if header_fits else 1)


# -- files crafted byte by byte ---------------------------------------------------------------


def element(tag: int, vr: bytes, value: bytes = b"", length: int | None = None) -> bytes:
    """One explicit VR little endian element (`length` overrides the real one)."""
    size = len(value) if length is None else length
    if vr in dicomscan.LONG_VRS:
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, size) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, size) + value


def item(body: bytes, defined: bool = True) -> bytes:
    if defined:
        return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body
    return struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + body + ITEM_END


ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def sequence(tag: int, *items: bytes) -> bytes:
    """An undefined-length sequence."""
    return element(tag, b"SQ", length=0xFFFFFFFF) + b"".join(items) + SEQUENCE_END


def meta(syntax: bytes = EXPLICIT, media: bytes = MR, extra: bytes = b"") -> bytes:
    body = (
        element(0x00020001, b"OB", b"\0\1")
        + element(0x00020002, b"UI", _even(media, b"\0"))
        + element(0x00020003, b"UI", b"1.2.3.4.5\0")
        + element(0x00020010, b"UI", _even(syntax, b"\0"))
        + extra
    )
    return element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


BASE = {
    0x00080005: (b"CS", b"ISO_IR 100"),
    0x00080008: (b"CS", b"ORIGINAL\\PRIMARY\\M\\ND"),
    0x00080016: (b"UI", MR + b"\0"),
    0x00080018: (b"UI", b"1.2.826.0.1.3680043.8.498.12345.1"),
    0x00080020: (b"DA", b"20260101"),
    0x00080060: (b"CS", b"MR"),
    0x00081030: (b"LO", b"research^study "),
    0x0008103E: (b"LO", b"t1_mprage_sag"),
    0x00100010: (b"PN", b"Doe^Jane"),
    0x00100020: (b"LO", b"SUBJ01"),
    0x00180050: (b"DS", b"1.0 "),
    0x0020000D: (b"UI", b"1.2.826.0.1.3680043.8.498.1\0"),
    0x0020000E: (b"UI", b"1.2.826.0.1.3680043.8.498.1.2"),
    0x00200011: (b"IS", b"3 "),
    0x00200013: (b"IS", b"1 "),
    0x00280004: (b"CS", b"MONOCHROME2 "),
    0x00280010: (b"US", b"\x02\x00"),
}
PIXELS = element(0x7FE00010, b"OW", b"\1\2" * 8)


def dataset(
    changes: dict[int, tuple[bytes, bytes] | None] | None = None, extra: bytes = b""
) -> bytes:
    """BASE with `changes` (None removes an element), in tag order, then `extra` raw bytes."""
    elements = {**BASE, **(changes or {})}
    body = b"".join(element(t, *v) for t, v in sorted(elements.items()) if v is not None)
    return body + extra


def part10(body: bytes, head: bytes | None = None, pixels: bytes = PIXELS) -> bytes:
    return b"\0" * 128 + b"DICM" + (meta() if head is None else head) + body + pixels


def _even(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


# Values at the edges of each conversion rule, by VR; a few are not plain ASCII.
EDGES = [
    b"",
    b" ",
    b"\0",
    b"  \0 ",
    b"A",
    b"A ",
    b" A",
    b"A\0",
    b"A\0\0",
    b"A \0",
    b"A\0 ",
    b"\0A",
    b"A B",
    b"A  B  ",
    b"A\\B",
    b"A \\B",
    b"A\\ B",
    b" A \\ B ",
    b"A\\\\B",
    b"\\",
    b"\\A",
    b"A\\",
    b"A\\ ",
    b"A\\\0",
    b"A\0\\B",
    b"A\tB",
    b"A\r\nB",
    b"A\x1b(BB",
    b"caf\xe9",
    b"\xc3\xa9",
    b"A=B",
    b"A=B=C=D",
    b"Doe^John",
    b"Doe^John^^^",
    b"1.2.840.10008.5.1.4.1.1.4",
    b"1.2.3\0",
    b"5\0",
    b"12 \0",
    b"1.5\0",
    b"+5 \\ 6",
    b"1.2.3 \\ 4.5.6",
    b"5",
    b"+5",
    b"-0",
    b"007",
    b" 5",
    b"5\\6",
    b"5 \\6",
    b"1.0",
    b"1.5",
    b".5",
    b"5.",
    b"1e3",
    b"1.5E+03",
    b"nan",
    b"inf",
    b"0x10",
    b"1_000",
    b"123456789012",
    b"1234567890123",
    b"99999999999999999999",
    b"12345678901234567",
    b"1.234567890123456",
    b"20260101",
    b"~",
    b"a" * 300,
]
VALUE_CASES = [
    (0x00080008, b"CS"),  # ImageType
    (0x00080018, b"UI"),  # SOPInstanceUID
    (0x00080016, b"UI"),  # SOPClassUID
    (0x00080060, b"CS"),  # Modality
    (0x0008103E, b"LO"),  # SeriesDescription
    (0x00200011, b"IS"),  # SeriesNumber
    (0x00280004, b"CS"),  # PhotometricInterpretation
    (0x00100010, b"PN"),  # PatientName
    (0x00100020, b"LO"),  # PatientID
    (0x00104000, b"LT"),  # PatientComments
    (0x00081030, b"LO"),  # StudyDescription
    (0x00080020, b"DA"),  # StudyDate
    (0x00080030, b"TM"),  # StudyTime
    (0x00180050, b"DS"),  # SliceThickness
    (0x00200013, b"IS"),  # InstanceNumber
    (0x00101010, b"AS"),  # PatientAge
    (0x00080050, b"SH"),  # AccessionNumber
    (0x00101001, b"PN"),  # OtherPatientNames
]


def test_values_at_the_edges_of_each_rule(tmp_path: Path) -> None:
    path = tmp_path / "v.dcm"
    taken = Counter[bool]()
    for tag, vr in VALUE_CASES:
        for value in EDGES:
            if len(value) > 0xFFFF:
                continue
            path.write_bytes(part10(dataset({tag: (vr, _even(value, b" "))})))
            for mode in ("error", "ignore"):
                taken[compare(path, KEYWORDS, mode)] += 1
            path.write_bytes(part10(dataset({tag: (vr, value)})))  # odd lengths too
            taken[compare(path, KEYWORDS, "ignore")] += 1
    print("\nedge values: read by dicomscan", taken[True], "left to pydicom", taken[False])
    assert taken[True] > 1000 and taken[False] > 500


@pytest.mark.parametrize(
    "charset",
    [
        b"",
        b"ISO_IR 6",
        b"ISO_IR 100",
        b"ISO_IR 192",
        b"GB18030",
        b"ISO_IR 100\0",
        b" ISO_IR 100",
        b"iso_ir 100",
        b"ISO_IR100",
        b"ISO_IR 13",
        b"ISO 2022 IR 6",
        b"\\ISO 2022 IR 87",
        b"ISO 2022 IR 13\\ISO 2022 IR 87",
        b"ISO_IR 100\\ISO_IR 144",
        b"UNKNOWN",
    ],
)
@pytest.mark.parametrize("name", [b"Doe^Jane", b"M\xfcller^J", b"\xe5\xb1\xb1\xe7\x94\xb0"])
def test_character_sets(tmp_path: Path, charset: bytes, name: bytes) -> None:
    path = tmp_path / "c.dcm"
    changes = {0x00080005: (b"CS", _even(charset, b" ")), 0x00100010: (b"PN", _even(name, b" "))}
    path.write_bytes(part10(dataset(changes)))
    for mode in ("error", "ignore"):
        fast = compare(path, ("PatientName",), mode)
        assert fast == (
            charset.rstrip(b" \0") in (b"", b"ISO_IR 6", b"ISO_IR 100", b"ISO_IR 192", b"GB18030")
            and name.isascii()
        )
    path.write_bytes(part10(dataset({0x00080005: None, 0x00100010: (b"PN", _even(name, b" "))})))
    assert compare(path, ("PatientName",), "ignore") == name.isascii()


def test_ascii_charsets_decode_ascii_as_ascii() -> None:
    """The character sets plainheader.py lets dicomscan read: pydicom decodes printable ASCII
    unchanged under each, for every text VR it decodes with the character set."""
    text = bytes(range(0x20, 0x7F))
    for charset in plainheader.ASCII_CHARSETS:
        encodings = convert_encodings(charset.decode() or None)
        assert decode_bytes(text, encodings, set()) == text.decode(), charset


def test_vr_tables_are_pydicoms() -> None:
    known = {vr for vr in ENCODED_VR if len(vr) == 2}
    assert {vr.encode() for vr in EXPLICIT_VR_LENGTH_32} == dicomscan.LONG_VRS
    assert known == dicomscan.SHORT_VRS | dicomscan.LONG_VRS
    assert not dicomscan.SHORT_VRS & dicomscan.LONG_VRS
    for syntax in dicomscan.EXPLICIT_LITTLE_ENDIAN_SYNTAXES:
        uid = UID(syntax.decode())
        assert uid.is_transfer_syntax and not uid.is_implicit_VR and uid.is_little_endian
        assert not uid.is_deflated and uid.name != syntax.decode()  # a registered name


def structures() -> Iterator[tuple[str, bytes, bool | None]]:
    """(name, file, whether dicomscan should read it: None when either answer is fine)."""
    icon = element(0x00280010, b"US", b"\1\0") + element(0x7FE00010, b"OB", length=0xFFFFFFFF)
    fragments = item(b"\0" * 8) + item(b"\xfe\xff\xdd\xe0\0\0\0\0") + SEQUENCE_END
    nested = b""
    for _ in range(dicomscan.MAX_DEPTH):
        nested = sequence(0x00081115, item(element(0x00080100, b"SH", b"X1") + nested, False))
    too_deep = sequence(0x00081115, item(nested, False))
    deeper = too_deep
    for _ in range(300):
        deeper = sequence(0x00081115, item(deeper, False))
    code = element(0x00080100, b"SH", b"121327") + element(0x00080102, b"SH", b"DCM ")
    implicit_code = struct.pack("<HHI", 0x0008, 0x0100, 6) + b"121327"
    yield "plain", part10(dataset()), True
    for name, seq, ok in (
        ("items of both kinds", sequence(0x00089215, item(code), item(code, False)), True),
        ("empty items", sequence(0x00089215, item(b""), item(b"", False)), True),
        ("empty sequence", sequence(0x00089215), True),
        ("nested sequences", nested, True),
        ("too deeply nested", too_deep, False),
        ("far too deeply nested", deeper, False),
        ("icon with fragments", sequence(0x00880200, item(icon + fragments)), True),
        ("icon fragments overrun", sequence(0x00880200, item(icon + item(b"\0" * 4)[:10])), False),
        ("implicit VR item", sequence(0x00089215, item(implicit_code)), False),
        ("implicit VR undefined item", sequence(0x00089215, item(implicit_code, False)), False),
        (
            "item overruns",
            sequence(0x00089215, struct.pack("<HHI", 0xFFFE, 0xE000, len(code) - 2) + code),
            False,
        ),
        (
            "item too long",
            sequence(
                0x00089215, struct.pack("<HHI", 0xFFFE, 0xE000, len(code) + 2) + code + b"\0\0"
            ),
            False,
        ),
        (
            "item delimiter length",
            sequence(0x00089215, item(code, False)[:-4] + b"\4\0\0\0"),
            False,
        ),
        (
            "item delimiter OB",
            sequence(0x00089215, item(code, False)[:-4] + b"OB\0\0\0\0\0\0"),
            False,
        ),
        ("sequence delimiter length", sequence(0x00089215, item(code))[:-4] + b"\2\0\0\0", False),
        ("not an item", sequence(0x00089215, code), False),
        (
            "unknown VR in item",
            sequence(0x00089215, item(element(0x00080100, b"XX", b"12"))),
            False,
        ),
        (
            "UN sequence",
            element(0x00091010, b"UN", length=0xFFFFFFFF) + item(implicit_code) + SEQUENCE_END,
            False,
        ),
        ("undefined OB", element(0x00091010, b"OB", length=0xFFFFFFFF) + fragments, True),
        ("defined sequence", element(0x00089215, b"SQ", item(code)), True),
        ("defined sequence of junk", element(0x00089215, b"SQ", b"\xff" * 16), True),
    ):
        yield name, part10(_with(seq)), ok
    yield "frame groups (defined)", part10(_with(element(0x52009229, b"SQ", item(code)))), False
    yield "frame groups (undefined)", part10(_with(sequence(0x52009230, item(code)))), False
    yield "DICOMDIR media class", part10(dataset(), meta(media=b"1.2.840.10008.1.3.10")), False
    yield (
        "DICOMDIR SOP class",
        part10(dataset({0x00080016: (b"UI", b"1.2.840.10008.1.3.10")})),
        False,
    )
    yield "no pixel data", part10(dataset(), pixels=b""), True
    yield "no pixel data, no Rows", part10(dataset({0x00280010: None}), pixels=b""), True
    yield "float pixel data", part10(dataset(), pixels=element(0x7FE00008, b"OF", b"\0" * 8)), True
    yield (
        "pixel data without VR",
        part10(dataset(), pixels=struct.pack("<HHI", 0x7FE0, 0x10, 4) + b"abcd"),
        True,
    )
    yield "empty dataset", part10(b"", pixels=b""), False
    yield "command group", part10(element(0x00000002, b"UI", b"1.2\0") + dataset()), False
    yield "repeated tag", part10(dataset() + element(0x00080018, b"UI", b"1.2")), False
    yield "out of order", part10(element(0x00100010, b"PN", b"AB") + dataset()), False
    yield "item at top level", part10(dataset(), pixels=item(b"12")), False
    yield "unknown VR", part10(dataset({0x00091010: (b"XX", b"ab")})), False
    yield "lower-case VR", part10(dataset({0x00091010: (b"ob", b"ab")})), False
    yield "implicit dataset", part10(struct.pack("<HHI", 8, 0x16, 4) + b"1.2\0"), False
    yield (
        "value past the end",
        part10(dataset(extra=element(0x00291011, b"LO", b"ab", 40)), pixels=b""),
        False,
    )
    yield "wanted as UN", part10(dataset({0x0008103E: (b"UN", b"t1")})), False
    yield "SeriesNumber as LO", part10(dataset({0x00200011: (b"LO", b"3 ")})), False
    yield "SOPInstanceUID as LO", part10(dataset({0x00080018: (b"LO", b"1.2 ")})), False
    yield "charset as LO", part10(dataset({0x00080005: (b"LO", b"ISO_IR 100")})), False
    for syntax, ok in (
        (b"1.2.840.10008.1.2", False),
        (b"1.2.840.10008.1.2.2", False),
        (b"1.2.840.10008.1.2.1.99", False),
        (b"1.2.840.10008.1.2.4.95", False),
        (b"1.2.840.10008.1.2.1 ", True),
        (b" 1.2.840.10008.1.2.1", False),
        (b"1.2.840.10008.1.2.1\\1.2.840.10008.1.2", False),
        (b"1.2.840.10008.1.2.4.50", True),
        (b"1.2.840.10008.1.2.5", True),
    ):
        yield f"syntax {syntax!r}", part10(dataset(), meta(syntax)), ok
    no_length = meta()[12:]
    yield "meta without group length", part10(dataset(), no_length), None
    yield (
        "meta with undefined length",
        part10(dataset(), meta(extra=element(0x00020100, b"OB", length=0xFFFFFFFF) + fragments)),
        False,
    )
    yield (
        "meta out of order",
        part10(dataset(), meta(extra=element(0x00020001, b"OB", b"\0\1"))),
        False,
    )
    yield "no meta", b"\0" * 128 + b"DICM" + dataset() + PIXELS, False


def _with(extra: bytes) -> bytes:
    """BASE plus raw elements (one tag), in tag order."""
    tag = struct.unpack_from("<HH", extra)
    key = tag[0] << 16 | tag[1]
    before = {t: v for t, v in BASE.items() if t < key}
    after = {t: v for t, v in BASE.items() if t > key}
    return _encoded(before) + extra + _encoded(after)


def _encoded(elements: dict[int, tuple[bytes, bytes]]) -> bytes:
    return b"".join(element(t, *v) for t, v in sorted(elements.items()))


@pytest.mark.parametrize(
    ("name", "data", "fast"), list(structures()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_structures(tmp_path: Path, name: str, data: bytes, fast: bool | None) -> None:
    path = tmp_path / "s.dcm"
    path.write_bytes(data)
    for mode in ("error", "ignore"):
        taken = compare(path, KEYWORDS[:3], mode)
        if fast is not None:
            assert taken is fast, name
    for offset in range(128, len(data), max(1, len(data) // 60)):
        path.write_bytes(data[:offset])
        compare(path, KEYWORDS[:3], "ignore")


@pytest.mark.parametrize("whole", [True, False])
def test_headers_around_the_first_read(tmp_path: Path, whole: bool) -> None:
    """Headers that end just before, at and after HEAD_READ, with and without pixel data: the
    fast reader never answers from bytes that do not hold all pydicom would read."""
    path = tmp_path / "h.dcm"
    base = part10(dataset(), pixels=b"")
    for pad in range(-40, 40, 2):
        size = openfile.HEAD_READ - len(base) - 12 + pad
        filler = element(0x00291010, b"OB", b"\0" * (size - 12))
        data = part10(dataset(extra=filler), pixels=PIXELS if not whole else b"")
        if not whole:
            data += b"\0" * 100
        path.write_bytes(data)
        compare(path, (), "ignore")


def test_a_changed_pydicom_setting_turns_the_fast_path_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.dcm"
    path.write_bytes(part10(dataset()))
    assert compare(path)
    monkeypatch.setattr(pydicom.config, "datetime_conversion", True)
    assert not FileClassifier().fast
    slow = classify_with(FileClassifier(fast=False), path)
    assert classify_with(FileClassifier(), path) == slow


@pytest.mark.parametrize("mode", ["WARN", "RAISE"])
def test_pydicom_reads_leniently_whatever_the_process_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Header problems are judged by inspection's rules, not by pydicom's validation: pydicom
    reads for inspection with validation off, whatever mode the process set, and the mode is
    put back afterwards. The fast path stays on (it reads as pydicom then does)."""
    path = tmp_path / "long.dcm"
    path.write_bytes(part10(dataset({0x0008103E: (b"LO", b"x" * 70)})))  # LO holds 64
    with pytest.warns(UserWarning, match="exceeds the maximum length"):  # as shipped: WARN
        assert pydicom.dcmread(path).SeriesDescription == "x" * 70
    chosen = getattr(pydicom.config, mode)
    monkeypatch.setattr(pydicom.config.settings, "_reading_validation_mode", chosen)
    assert compare(path)  # both readers, warnings as errors: the same usable header
    slow = classify_with(FileClassifier(fast=False), path)
    assert slow.kind is FileKind.DICOM and slow.header is not None
    assert slow.header.series_description == "x" * 70
    assert pydicom.config.settings._reading_validation_mode == chosen


def test_inspect_uses_the_fast_reader_and_shares_values(samples: list[Path]) -> None:
    folder = samples[0].parent.parent
    session = inspect_module.inspect(folder, ("s",), ("PatientName", "PatientID"))
    headers = [f.header for f in session.files if f.header is not None]
    assert len(headers) == len(samples)
    first, second = headers[0], headers[1]
    assert first.series_instance_uid is second.series_instance_uid  # one object, shared
    assert first.values is second.values


# -- helpers for the library test -------------------------------------------------------------


def _part10(path: Path) -> bool:
    with path.open("rb") as fp:
        return fp.read(132)[128:] == b"DICM"


def _diverse(paths: list[Path], count: int) -> list[Path]:
    """Up to `count` files, as different as possible: transfer syntax, size, sequences."""
    seen: dict[tuple[object, ...], Path] = {}
    for path in paths:
        data = path.read_bytes()[: openfile.HEAD_READ]
        syntax = data[data.find(b"1.2.840.10008.1.2") :][:22].split(b"\0")[0]
        key = (syntax, b"\xff\xff\xff\xff" in data, len(data) // 20000, path.suffix)
        seen.setdefault(key, path)
    chosen = list(seen.values())
    rest = [p for p in paths if p not in chosen]
    random.Random(1).shuffle(rest)
    return (chosen + rest)[:count]


def _cuts(data: bytes, rng: random.Random) -> list[int]:
    """Offsets to cut at: around the file meta and every top-level element boundary that
    pydicom finds, inside values, around the pixel data tag, and a few at random."""
    offsets = {*range(126, 150), len(data) - 1, len(data) - 2}
    try:
        boundaries = _boundaries(data)
    except Exception:
        boundaries = []
    for start, value, end in boundaries[:80]:
        offsets.update(
            {start, start + 1, start + 7, value - 1, value, (value + end) // 2, end - 1, end}
        )
    offsets.update(rng.randrange(len(data)) for _ in range(10))
    return sorted(o for o in offsets if 0 < o < len(data))


def _boundaries(data: bytes) -> list[tuple[int, int, int]]:
    """(element start, value start, value end) of the top-level elements, as pydicom reads
    them (explicit VR little endian only)."""
    fp = pydicom.filebase.DicomBytesIO(data)
    fp.seek(132)
    found = []
    for raw in data_element_generator(fp, False, True):
        header = 12 if raw.VR in EXPLICIT_VR_LENGTH_32 else 8
        if raw.length == 0xFFFFFFFF:
            found.append((raw.value_tell - header, raw.value_tell, fp.tell()))
            continue
        found.append((raw.value_tell - header, raw.value_tell, raw.value_tell + raw.length))
        if raw.tag == 0x7FE00010:
            break
    return found
