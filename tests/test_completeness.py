"""core/completeness.py: which series look incomplete, from their headers alone. Pure."""

from __future__ import annotations

from dataclasses import replace

import pytest

from xnat_drop.core import completeness
from xnat_drop.core.model import DicomHeader, FileFacts, FileKind

MR = "1.2.840.10008.5.1.4.1.1.4"
ORIGINAL = ("ORIGINAL", "PRIMARY", "M", "ND")


def series(
    count: int,
    *,
    number: int = 5,
    folder: str = "05_bold",
    uid: str = "1.2.3.5",
    numbers: list[int] | None = None,
    **fields: object,
) -> list[FileFacts]:
    """`count` files of one series; `fields` go into every header (per file if a list)."""
    files = []
    for i in range(count):
        per_file = {k: (v[i] if isinstance(v, list) else v) for k, v in fields.items()}
        header = DicomHeader(
            MR, f"{uid}.{i}", "1.2.3", uid, number, "a description", ORIGINAL, "MR",
            instance_number=(numbers[i] if numbers is not None else i + 1),
            **per_file,  # type: ignore[arg-type]
        )  # fmt: skip
        path = f"{folder}/IM{i:04d}.dcm" if folder else f"IM{i:04d}.dcm"
        files.append(FileFacts(path, 1000, FileKind.DICOM, header))
    return files


def summaries(files: list[FileFacts]) -> list[str]:
    return [f"{s.name}: {s.summary}" for s in completeness.shortfalls(files)]


def test_a_whole_series_without_counts_is_complete() -> None:
    assert completeness.shortfalls(series(27)) == ()


def test_fewer_files_than_images_in_acquisition() -> None:
    assert summaries(series(88, images_in_acquisition=176)) == [
        "the series of 88 files under 05_bold/ (first: 05_bold/IM0000.dcm): 88 of 176 images"
    ]
    [found] = completeness.shortfalls(series(88, images_in_acquisition=176))
    assert "ImagesInAcquisition (0020,1002) says 176" in found.signal


def test_images_in_acquisition_met_is_complete() -> None:
    assert completeness.shortfalls(series(176, images_in_acquisition=176)) == ()


def test_images_in_acquisition_per_acquisition_only_where_one_acquisition_holds_that_many() -> None:
    # Siemens style: 3 acquisitions of 4 images, the last one cut short.
    acquisitions = [1] * 4 + [2] * 4 + [3] * 2
    numbers = [1, 2, 3, 4] * 2 + [1, 2]
    files = series(10, images_in_acquisition=4, acquisition_number=acquisitions, numbers=numbers)
    assert summaries(files) == [
        "the series of 10 files under 05_bold/ (first: 05_bold/IM0000.dcm): 10 of 12 images"
    ]
    # GE style: the series total, with several acquisition numbers: nothing to say.
    files = series(12, images_in_acquisition=12, acquisition_number=[1] * 6 + [2] * 6)
    assert completeness.shortfalls(files) == ()
    # No acquisition holds exactly the announced count: not evidence.
    files = series(10, images_in_acquisition=4, acquisition_number=[1] * 5 + [2] * 5)
    assert completeness.shortfalls(files) == ()


def test_temporal_positions_times_images_per_position() -> None:
    positions = [p for p in range(1, 4) for _ in range(4)][:10]  # 3 time points of 4, cut
    files = series(10, temporal_positions=3, temporal_position=positions)
    [found] = completeness.shortfalls(files)
    assert found.summary == "10 of 12 images"
    assert "NumberOfTemporalPositions (0020,0105) says 3" in found.signal
    whole = series(
        12, temporal_positions=3, temporal_position=[p for p in (1, 2, 3) for _ in "abcd"]
    )
    assert completeness.shortfalls(whole) == ()


def test_an_instance_number_hole_in_dense_numbering() -> None:
    numbers = [*range(1, 11), *range(18, 28)]  # 11-17 missing: a skipped stretch
    [found] = completeness.shortfalls(series(20, numbers=numbers))
    assert found.summary == "20 of at least 27 images" and found.at_least
    assert "InstanceNumber (0020,0013) skips 7 numbers" in found.signal


@pytest.mark.parametrize(
    "numbers",
    [
        [*range(11, 28)],  # starts past 1: a vendor's own start, or the rest of a copy
        [*range(2, 40, 2)],  # numbered in steps of two
        [1, 3, 5, 7, 8, 9],  # mostly gaps: not dense
        [0, 1, 2, 3],  # starts at 0: complete
    ],
)
def test_instance_numbers_that_are_not_evidence(numbers: list[int]) -> None:
    assert completeness.shortfalls(series(len(numbers), numbers=numbers)) == ()


def test_numbering_restarted_per_acquisition_is_judged_per_acquisition() -> None:
    numbers = [1, 2, 3, 4, 1, 2, 4]  # the second acquisition lacks its image 3
    files = series(7, numbers=numbers, acquisition_number=[1, 1, 1, 1, 2, 2, 2])
    assert summaries(files) == [
        "the series of 7 files under 05_bold/ (first: 05_bold/IM0000.dcm): 7 of at least 8 images"
    ]
    # Repeated numbers that nothing tells apart: numbering says nothing.
    assert completeness.shortfalls(series(4, numbers=[1, 2, 2, 4])) == ()


def test_an_enhanced_object_lacking_frames() -> None:
    [found] = completeness.shortfalls(series(1, frames=176, frame_items=88))
    assert (found.summary, found.unit) == ("88 of 176 frames", "frames")
    assert completeness.shortfalls(series(1, frames=176, frame_items=176)) == ()


def test_a_mosaic_is_judged_by_its_numbering_only() -> None:
    files = series(20, images_in_acquisition=36)  # slices in the mosaic, not files
    mosaic = [
        replace(f, header=replace(f.header, image_type=(*ORIGINAL, "MOSAIC")))  # type: ignore[type-var]
        for f in files
    ]
    assert completeness.shortfalls(mosaic) == ()


def test_series_are_told_apart_by_uid_and_named_by_their_files_only() -> None:
    files = [
        *series(3, number=2, folder="02_t1", uid="1.2.3.2", images_in_acquisition=3),
        *series(2, number=7, folder="07_dwi", uid="1.2.3.7", images_in_acquisition=4),
        *series(1, number=None, folder="", uid="1.2.3.9", images_in_acquisition=2),  # type: ignore[arg-type]
    ]
    assert summaries(files) == [
        "the series of 1 file, IM0000.dcm: 1 of 2 images",
        "the series of 2 files under 07_dwi/ (first: 07_dwi/IM0000.dcm): 2 of 4 images",
    ]
    for violation in completeness.violations(completeness.shortfalls(files)):
        assert violation.rule == "incomplete-series"
        assert "1.2.3" not in violation.sentence and "description" not in violation.sentence
        assert "series 7" not in violation.sentence  # no SeriesNumber either
        assert "move the session folder back to incoming/" in violation.sentence


def test_the_held_text_and_the_late_files_sentence() -> None:
    found = completeness.violations(completeness.shortfalls(series(88, images_in_acquisition=176)))
    assert completeness.held_text(found) == (
        "the series of 88 files under 05_bold/ (first: 05_bold/IM0000.dcm): 88 of 176 images"
    )
    late = completeness.late_files(17, 6.2, 1_790_000_000.0, "https://xnat.example.org/data/x")
    assert late.rule == "late-files"
    assert late.sentence.startswith("These 17 files arrived 6 s after the session was delivered")
    assert 'xnat.on_existing = "append"' in late.sentence and "label" not in late.sentence.replace(
        "needs no other label", ""
    )
    early = completeness.late_files(1, -2.0, 1_790_000_000.0, "u")
    assert early.sentence.startswith("This file arrived while the session was being delivered")


def as_class(facts: FileFacts, sop_class: str, **changes: object) -> FileFacts:
    """`facts` with another SOP class (and header `changes`)."""
    assert facts.header is not None
    return replace(facts, header=replace(facts.header, sop_class_uid=sop_class, **changes))  # type: ignore[arg-type]


def test_non_image_objects_are_not_counted() -> None:
    # Siemens CSA Non-Image objects (one physiological log per run, say) numbered 1, 2, 4: as
    # MR images that numbering would be a hole; they are no images of any announced count.
    logs = series(3, numbers=[1, 2, 4], folder="99_physio", uid="1.2.3.99", number=99)
    assert summaries(logs) == [
        "the series of 3 files under 99_physio/ (first: 99_physio/IM0000.dcm): "
        "3 of at least 4 images"
    ]
    assert completeness.shortfalls([as_class(f, "1.3.12.2.1107.5.9.1") for f in logs]) == ()
    # An SR without InstanceNumber, in a series of its own or inside an image series: it
    # neither makes a series incomplete nor fills a gap in one.
    sr = as_class(
        series(1, folder="90_sr", uid="1.2.3.90", number=90)[0],
        "1.2.840.10008.5.1.4.1.1.88.11",
        instance_number=None,
    )
    assert completeness.shortfalls([*series(4, images_in_acquisition=4), sr]) == ()
    inside = as_class(sr, "1.2.840.10008.5.1.4.1.1.88.11", series_instance_uid="1.2.3.5")
    assert summaries([*series(3, images_in_acquisition=4), inside]) == [
        "the series of 3 files under 05_bold/ (first: 05_bold/IM0000.dcm): 3 of 4 images"
    ]
