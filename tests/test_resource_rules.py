"""Session resources (core/resources.py, rules.evaluate, service/judge.py): the reserved folder
`resources/<label>/<name>`, each of its rules broken and passed, and the [resources] table.

Table tests on values first (no disk), then real sessions on disk: pydicom's and nibabel's
files inspected as the daemon does, so the kinds come from real content and the stamps from
real files.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from xnat_drop.core.config import (
    DEFAULT_RESOURCES,
    DEFAULT_ROUTING,
    DEFAULT_RULES,
    Config,
    ResourcesConfig,
    RulesConfig,
    parse,
)
from xnat_drop.core.errors import ConfigError
from xnat_drop.core.model import (
    DicomHeader,
    FileFacts,
    FileKind,
    Policy,
    Remedy,
    ResourceFile,
    Route,
    Session,
    Target,
    Verdict,
)
from xnat_drop.core.names import resource_label_problem, resource_name_problem
from xnat_drop.core.resources import is_resource_path, split
from xnat_drop.core.rules import evaluate
from xnat_drop.service.judge import judge

from data import MR_SERIES, NIBABEL_DATA, copy_study, pydicom_file

TARGET = Target("P1", "S01", "S01_MR1")
MR = "1.2.840.10008.5.1.4.1.1.4"


def header(sop: str, study: str = "1.2.3", series: str = "1.2.3.1", number: int = 1) -> DicomHeader:
    return DicomHeader(
        MR, sop, study, series, number, "T1", ("ORIGINAL", "PRIMARY"), "MR", instance_number=1
    )


def dicom(path: str, study: str = "1.2.3") -> FileFacts:
    return FileFacts(path, 1000, FileKind.DICOM, header(path, study), stamp=7)


def f(path: str, kind: FileKind = FileKind.OTHER, size: int = 10) -> FileFacts:
    return FileFacts(path, size, kind, note="", stamp=hash(path) & 0xFFFF or 1)


def evaluated(
    *files: FileFacts,
    resources: ResourcesConfig = DEFAULT_RESOURCES,
    rules: RulesConfig = DEFAULT_RULES,
) -> Verdict:
    session = Session("S01_MR1", ("P1", "S01", "S01_MR1"), (dicom("t1/1.dcm"), *files))
    return evaluate(session, rules, Route(TARGET), resources)


def excluding(*rules: str) -> RulesConfig:
    policies = dict(DEFAULT_RULES.policies) | dict.fromkeys(rules, Policy.EXCLUDE)
    return dataclasses.replace(DEFAULT_RULES, policies=tuple(policies.items()))


LISTED = ResourcesConfig(labels=("physio", "logs"))
CONVERTED_OK = ResourcesConfig(allow_converted=True)

# (id, file, config, the rules it breaks, or () when it becomes the resource file (label, name))
CASES: list[tuple[str, FileFacts, ResourcesConfig, tuple[str, ...], tuple[str, str] | None]] = [
    # -- accepted, and how label and name are read
    ("tsv", f("resources/physio/ecg.tsv"), DEFAULT_RESOURCES, (), ("physio", "ecg.tsv")),
    (
        "deeper-path-kept",
        f("resources/physio/run1/ecg.tsv"),
        DEFAULT_RESOURCES,
        (),
        ("physio", "run1/ecg.tsv"),
    ),
    ("folder-case", f("Resources/logs/a.log"), DEFAULT_RESOURCES, (), ("logs", "a.log")),
    ("folder-upper", f("RESOURCES/logs/a.log"), DEFAULT_RESOURCES, (), ("logs", "a.log")),
    ("zero-bytes", f("resources/logs/empty.log", FileKind.EMPTY, 0), DEFAULT_RESOURCES, (),
     ("logs", "empty.log")),
    ("zip-kept", f("resources/raw/data.zip", FileKind.ARCHIVE), DEFAULT_RESOURCES, (),
     ("raw", "data.zip")),
    ("gzip-kept", f("resources/physio/ecg.tsv.gz", FileKind.ARCHIVE), DEFAULT_RESOURCES, (),
     ("physio", "ecg.tsv.gz")),
    ("label-64", f(f"resources/{'a' * 64}/x"), DEFAULT_RESOURCES, (), ("a" * 64, "x")),
    ("label-dash-underscore", f("resources/eye_track-2/x"), DEFAULT_RESOURCES, (),
     ("eye_track-2", "x")),
    ("name-space-plus-dot", f("resources/logs/run 1+2.v1.log"), DEFAULT_RESOURCES, (),
     ("logs", "run 1+2.v1.log")),
    ("name-dotfile", f("resources/logs/.hidden"), DEFAULT_RESOURCES, (), ("logs", ".hidden")),
    ("listed-label", f("resources/physio/ecg.tsv"), LISTED, (), ("physio", "ecg.tsv")),
    ("converted-allowed", f("resources/nii/t1.nii.gz", FileKind.NIFTI), CONVERTED_OK, (),
     ("nii", "t1.nii.gz")),
    ("sidecar-allowed", f("resources/nii/t1.json", FileKind.CONVERTED), CONVERTED_OK, (),
     ("nii", "t1.json")),
    # -- broken
    ("layout-loose-file", f("resources/ecg.tsv"), DEFAULT_RESOURCES, ("resource-layout",), None),
    ("label-space", f("resources/my physio/x"), DEFAULT_RESOURCES, ("resource-label",), None),
    ("label-digits", f("resources/123/x"), DEFAULT_RESOURCES, ("resource-label",), None),
    ("label-leading-digit", f("resources/1st/x"), DEFAULT_RESOURCES, ("resource-label",), None),
    ("label-65", f(f"resources/{'a' * 65}/x"), DEFAULT_RESOURCES, ("resource-label",), None),
    ("label-quote", f("resources/o'brien/x"), DEFAULT_RESOURCES, ("resource-label",), None),
    ("label-accent", f("resources/café/x"), DEFAULT_RESOURCES, ("resource-label",), None),
    ("label-null", f("resources/NULL/x"), DEFAULT_RESOURCES, ("resource-label",), None),
    ("label-dicom-lower", f("resources/dicom/x"), DEFAULT_RESOURCES, ("resource-label",), None),
    ("label-snapshots", f("resources/Snapshots/x"), DEFAULT_RESOURCES, ("resource-label",), None),
    ("label-not-listed", f("resources/notes/x"), LISTED, ("resource-label",), None),
    ("label-listed-case", f("resources/Physio/x"), LISTED, ("resource-label",), None),
    ("name-hash", f("resources/logs/run#1.log"), DEFAULT_RESOURCES, ("resource-name",), None),
    ("name-percent", f("resources/logs/100%.log"), DEFAULT_RESOURCES, ("resource-name",), None),
    ("name-accent", f("resources/logs/résumé.txt"), DEFAULT_RESOURCES, ("resource-name",), None),
    ("name-paren", f("resources/logs/a (1).txt"), DEFAULT_RESOURCES, ("resource-name",), None),
    ("name-comma", f("resources/logs/a,b.txt"), DEFAULT_RESOURCES, ("resource-name",), None),
    ("name-catalog", f("resources/logs/x_catalog.xml"), DEFAULT_RESOURCES, ("resource-name",),
     None),
    ("name-catalog-case", f("resources/logs/X_Catalog.XML"), DEFAULT_RESOURCES,
     ("resource-name",), None),
    ("name-lock", f("resources/logs/.~lock-x#"), DEFAULT_RESOURCES, ("resource-name",), None),
    ("name-deep-segment", f("resources/logs/a?b/x.log"), DEFAULT_RESOURCES, ("resource-name",),
     None),
    ("name-trailing-space", f("resources/logs/x.log "), DEFAULT_RESOURCES, ("resource-name",),
     None),
    ("name-256-bytes", f(f"resources/logs/{'x' * 256}"), DEFAULT_RESOURCES, ("resource-name",),
     None),
    ("name-not-utf8", f("resources/logs/\udce9t\udce9.txt"), DEFAULT_RESOURCES,
     ("resource-name",), None),
    ("dicom", dicom("resources/extra/1.dcm", study="9.9"), DEFAULT_RESOURCES,
     ("dicom-in-resources",), None),
    ("dicom-loose", dicom("resources/1.dcm"), DEFAULT_RESOURCES, ("dicom-in-resources",), None),
    ("dicom-bad-label", dicom("resources/a b/1.dcm"), DEFAULT_RESOURCES, ("dicom-in-resources",),
     None),
    ("bare-dicom", f("resources/x/IM1", FileKind.DICOM_NO_PREAMBLE), DEFAULT_RESOURCES,
     ("dicom-in-resources",), None),
    ("unreadable-dicom", f("resources/x/IM1", FileKind.UNREADABLE_DICOM), DEFAULT_RESOURCES,
     ("dicom-in-resources",), None),
    ("compressed-dicom", f("resources/x/IM1.dcm.gz", FileKind.COMPRESSED_DICOM),
     DEFAULT_RESOURCES, ("dicom-in-resources",), None),
    ("nifti", f("resources/nii/t1.nii", FileKind.NIFTI), DEFAULT_RESOURCES, ("nifti",), None),
    ("analyze", f("resources/nii/t1.img", FileKind.ANALYZE), DEFAULT_RESOURCES, ("nifti",), None),
    ("sidecar", f("resources/nii/t1.json", FileKind.CONVERTED), DEFAULT_RESOURCES, ("nifti",),
     None),
    ("link", f("resources/logs/link", FileKind.UNSAFE), DEFAULT_RESOURCES, ("unsafe-file",), None),
    ("link-allowed-converted", f("resources/logs/fifo", FileKind.UNSAFE), CONVERTED_OK,
     ("unsafe-file",), None),
    # -- neither: junk is ignored, and what is not below the folder is judged as before
    ("junk", f("resources/logs/.DS_Store", FileKind.JUNK), DEFAULT_RESOURCES, (), None),
    ("dicomdir-junk", f("resources/logs/DICOMDIR", FileKind.JUNK), DEFAULT_RESOURCES, (), None),
    ("file-named-resources", f("resources"), DEFAULT_RESOURCES, ("non-dicom",), None),
    ("folder-deeper-down", f("t1/resources/logs/a.log"), DEFAULT_RESOURCES, ("non-dicom",), None),
    ("prefix-is-not-the-folder", f("resources2/logs/a.log"), DEFAULT_RESOURCES, ("non-dicom",),
     None),
    ("folder-off", f("resources/logs/a.log"), ResourcesConfig(folder=""), ("non-dicom",), None),
    ("other-folder-name", f("extras/logs/a.log"), ResourcesConfig(folder="extras"), (),
     ("logs", "a.log")),
    ("empty-outside", f("t1/2.dcm", FileKind.EMPTY, 0), DEFAULT_RESOURCES, ("unreadable-dicom",),
     None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("facts", "config", "broken", "kept"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_each_resource_file_is_kept_or_breaks_its_rule(
    facts: FileFacts,
    config: ResourcesConfig,
    broken: tuple[str, ...],
    kept: tuple[str, str] | None,
) -> None:
    verdict = evaluated(facts, resources=config)
    assert tuple(v.rule for v in verdict.violations) == broken
    assert all(facts.path in v.files for v in verdict.violations)
    expected = () if kept is None else (ResourceFile(*kept, facts.path, facts.size, facts.stamp),)
    assert verdict.resources == expected
    # resource files are never uploaded, and the DICOM upload is what it was
    assert [u.path for u in verdict.upload] == ["t1/1.dcm"]
    assert verdict.accepted == (not broken)


def test_resources_are_sorted_by_label_then_name_and_carry_their_stamps() -> None:
    files = [
        f("resources/physio/run2/ecg.tsv"),
        f("resources/logs/z.log"),
        f("resources/physio/run1/resp.tsv"),
        f("resources/logs/a.log", FileKind.EMPTY, 0),
    ]
    verdict = evaluated(*files)
    assert [(r.label, r.name) for r in verdict.resources] == [
        ("logs", "a.log"),
        ("logs", "z.log"),
        ("physio", "run1/resp.tsv"),
        ("physio", "run2/ecg.tsv"),
    ]
    stamps = {x.path: x.stamp for x in files}
    assert all(r.stamp == stamps[r.path] and r.stamp for r in verdict.resources)
    assert verdict.accepted and verdict.violations == () and verdict.excluded == ()


@pytest.mark.parametrize(
    ("rule", "facts"),
    [
        ("resource-layout", f("resources/loose.txt")),
        ("resource-label", f("resources/a b/x.txt")),
        ("resource-name", f("resources/logs/a#b.txt")),
        ("dicom-in-resources", dicom("resources/extra/1.dcm")),
        ("nifti", f("resources/nii/t1.nii", FileKind.NIFTI)),
    ],
)
def test_exclude_leaves_the_file_out_and_delivers_the_rest(rule: str, facts: FileFacts) -> None:
    good = f("resources/logs/ok.log")
    verdict = evaluated(facts, good, rules=excluding(rule))
    assert [(v.rule, v.policy) for v in verdict.violations] == [(rule, Policy.EXCLUDE)]
    assert verdict.accepted
    assert verdict.excluded == (facts.path,)
    assert [r.path for r in verdict.resources] == [good.path]
    assert [u.path for u in verdict.upload] == ["t1/1.dcm"]


def test_a_rejected_session_still_lists_the_resource_files_that_break_no_rule() -> None:
    verdict = evaluated(f("resources/a b/x.txt"), f("resources/logs/ok.log"))
    assert not verdict.accepted
    assert [r.path for r in verdict.resources] == ["resources/logs/ok.log"]


def test_one_violation_per_bad_label_folder_listing_its_files() -> None:
    verdict = evaluated(
        f("resources/a b/1.txt"), f("resources/a b/sub/2.txt"), f("resources/c d/3")
    )
    assert [(v.rule, v.subject, v.files) for v in verdict.violations] == [
        ("resource-label", "resources/a b/", ("resources/a b/1.txt", "resources/a b/sub/2.txt")),
        ("resource-label", "resources/c d/", ("resources/c d/3",)),
    ]
    first = verdict.violations[0].sentence
    assert first.startswith("The resource folder “resources/a b/” (2 files, e.g. “resources/a b/1")
    assert "such as “a_b”" in first


def test_a_label_not_in_the_list_names_the_list_and_offers_the_administrator() -> None:
    [violation] = evaluated(f("resources/notes/x"), resources=LISTED).violations
    assert "(“physio”, “logs”; resources.labels)" in violation.sentence
    assert "ask the administrator" in violation.sentence
    assert violation.remedy is Remedy.CHOICE


def test_two_spellings_of_the_folder_keep_the_configured_one() -> None:
    verdict = evaluated(
        f("resources/logs/a.log"), f("Resources/logs/a.log"), f("Resources/physio/b")
    )
    [violation] = verdict.violations
    assert violation.rule == "resource-layout" and violation.subject == "Resources/"
    assert violation.files == ("Resources/logs/a.log", "Resources/physio/b")
    assert "two resources folders, “resources/” and “Resources/”" in violation.sentence
    assert [r.path for r in verdict.resources] == ["resources/logs/a.log"]


def test_resource_files_count_for_size_limits_and_leave_the_resources_then() -> None:
    rules = dataclasses.replace(DEFAULT_RULES, max_file_bytes=2000)
    verdict = evaluated(f("resources/raw/big.zip", FileKind.ARCHIVE, 5000), rules=rules)
    assert [v.rule for v in verdict.violations] == ["size-limit"]
    assert verdict.resources == ()


def test_a_session_of_resources_only_has_nothing_to_upload() -> None:
    session = Session("E", ("P1", "S01", "E"), (f("resources/logs/a.log"),))
    verdict = evaluate(session, DEFAULT_RULES, Route(TARGET))
    [violation] = verdict.violations
    assert violation.rule == "no-dicom"
    assert violation.sentence.startswith("The folder holds no DICOM files")
    assert [r.path for r in verdict.resources] == ["resources/logs/a.log"]


def test_dicom_in_resources_is_not_counted_by_the_dicom_rules() -> None:
    image = dicom("t1/1.dcm")
    same_uid = FileFacts("resources/x/1.dcm", 999, FileKind.DICOM, image.header, digest="other")
    other_study = dicom("resources/x/2.dcm", study="9.9")
    rules = dataclasses.replace(excluding("dicom-in-resources"), phi=True)
    verdict = evaluated(same_uid, other_study, rules=rules)
    # no duplicate-instance, no mixed-studies: only the two files themselves, left out
    assert [v.rule for v in verdict.violations] == ["dicom-in-resources"] * 2
    assert verdict.accepted and [u.path for u in verdict.upload] == ["t1/1.dcm"]


@pytest.mark.parametrize(
    ("facts", "words"),
    [
        (dicom("resources/x/1.dcm"), "move it out of “resources/” into an image folder"),
        (
            f("resources/x/a.dcm.gz", FileKind.COMPRESSED_DICOM),
            "decompress it and move it out of “resources/”",
        ),
        (f("resources/a.txt"), "Move it into a folder there named for what it holds"),
        (f("resources/logs/a#b.txt"), "the name “a#b.txt” holds characters XNAT would not store"),
        (f("resources/logs/x_catalog.xml"), "ends in “_catalog.xml”"),
        (f("resources/nii/t1.nii", FileKind.NIFTI), "resources.allow_converted is off"),
    ],
)
def test_each_sentence_names_the_file_and_what_to_do(facts: FileFacts, words: str) -> None:
    [violation] = evaluated(facts).violations
    assert f"“{facts.path}”" in violation.sentence and words in violation.sentence
    assert violation.sentence.endswith("drop the session again.")


@pytest.mark.parametrize(
    ("facts", "hinted"),
    [
        (f("notes.txt"), True),
        (f("data.zip", FileKind.ARCHIVE), True),
        (f("IM1.dcm.gz", FileKind.COMPRESSED_DICOM), False),
        (f("t1.nii", FileKind.NIFTI), False),
    ],
)
def test_outside_resources_non_dicom_says_where_to_put_it(facts: FileFacts, hinted: bool) -> None:
    [violation] = evaluated(facts).violations
    assert ("such as “resources/logs/”" in violation.sentence) == hinted
    [off] = evaluated(facts, resources=ResourcesConfig(folder="")).violations
    assert "resources/" not in off.sentence


def test_paths_below_the_folder_and_split() -> None:
    assert is_resource_path("Resources/a/b", "resources")
    assert is_resource_path("resources/a", "RESOURCES")
    assert not is_resource_path("resources", "resources")
    assert not is_resource_path("x/resources/a", "resources")
    assert not is_resource_path("resources/a", "")
    images, held = split([f("a"), f("resources/x/y"), f("b/c")], "resources")
    assert [x.path for x in images] == ["a", "b/c"] and [x.path for x in held] == ["resources/x/y"]


@pytest.mark.parametrize(
    ("label", "fine"),
    [("physio", True), ("a", True), ("A_b-9", True), ("a" * 64, True), ("a" * 65, False),
     ("1", False), ("_x", False), ("-x", False), ("a.b", False), ("a b", False), ("", False),
     ("null", False), ("Dicom", False), ("SNAPSHOTS", False), ("snapshot", True)],
)  # fmt: skip
def test_resource_labels(label: str, fine: bool) -> None:
    assert (resource_label_problem(label) == "") == fine


@pytest.mark.parametrize(
    ("name", "fine"),
    [("ecg.tsv", True), ("run 1.log", True), ("a+b", True), ("..x", True), (".", False),
     ("..", False), ("", False), ("a" * 255, True), ("a" * 255 + "b", False),
     ("é" * 128, False), ("x_catalog.xml", False), (".~lock-x", False), ("a\nb", False),
     ("a/b", False), ("a\\b", False), ("a:b", False), (" a", False), ("a ", False)],
)  # fmt: skip
def test_resource_name_segments(name: str, fine: bool) -> None:
    assert (resource_name_problem(name) == "") == fine


# -- the [resources] table ---------------------------------------------------------------------

MINIMAL: dict[str, dict[str, Any]] = {
    "paths": {"root": "/srv/drop"},
    "xnat": {"url": "https://xnat.example.org"},
}


def parsed(resources: dict[str, Any]) -> Config:
    return parse({**MINIMAL, "resources": resources}, base=Path("/etc/xnat-drop"), env={})


def test_the_resources_table_is_read() -> None:
    assert parsed({}).resources == DEFAULT_RESOURCES == ResourcesConfig()
    config = parsed(
        {
            "folder": "extras",
            "labels": ["physio", "logs"],
            "allow_converted": True,
            "on_conflict": "overwrite",
        }
    ).resources
    assert config == ResourcesConfig("extras", ("physio", "logs"), True, "overwrite")
    assert parsed({"folder": ""}).resources.folder == ""


def test_labels_xnat_cannot_use_are_refused_in_the_list() -> None:
    with pytest.raises(ConfigError) as caught:
        parsed({"labels": ["physio", "my logs", "DICOM"]})
    assert [p.split(":")[0] for p in caught.value.problems] == ["resources.labels"] * 2
    assert "'my logs' is not a name XNAT can use" in caught.value.problems[0]
    assert "'DICOM' is a name XNAT reserves" in caught.value.problems[1]


def test_resource_policies_can_exclude() -> None:
    config = parse(
        {**MINIMAL, "rules": {"dicom-in-resources": "exclude", "resource-name": "exclude"}},
        base=Path("/etc"),
        env={},
    )
    assert config.rules.policy("dicom-in-resources") is Policy.EXCLUDE
    assert config.rules.policy("resource-name") is Policy.EXCLUDE
    assert config.rules.policy("resource-label") is Policy.REJECT


# -- real sessions on disk, inspected as the daemon does ------------------------------------------


def config_for(tmp_path: Path, resources: ResourcesConfig = DEFAULT_RESOURCES) -> Config:
    base = parse(MINIMAL, base=tmp_path, env={})
    return dataclasses.replace(base, routing=DEFAULT_ROUTING, resources=resources)


def real_session(root: Path) -> Path:
    """A real study with a resources folder of real files of every kind."""
    session = root / "P1" / "S01" / "S01_MR1"
    copy_study(session)
    res = session / "Resources"  # the folder name is matched ignoring case
    (res / "physio" / "run1").mkdir(parents=True)
    (res / "physio" / "run1" / "ecg.tsv").write_text("time\tecg\n0.0\t0.1\n")
    (res / "physio" / "notes.txt").write_text("Subject moved during run 2.\n")
    (res / "logs").mkdir()
    (res / "logs" / "empty.log").write_bytes(b"")
    (res / "logs" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + bytes(100))
    shutil.copyfile(pydicom_file("DICOMDIR"), res / "logs" / "DICOMDIR")
    (res / "raw").mkdir()
    with zipfile.ZipFile(res / "raw" / "series.zip", "w") as zf:  # DICOM inside: kept whole
        zf.write(MR_SERIES / "MR2" / "6273", "IM1.dcm")
    shutil.copyfile(NIBABEL_DATA / "simple.trk", res / "raw" / "tracts.trk")  # tractography
    return session


def test_a_real_session_with_resources_is_accepted_and_lists_them(tmp_path: Path) -> None:
    session = real_session(tmp_path)
    judgement = judge(session, ("P1", "S01", "S01_MR1"), config_for(tmp_path))
    verdict = judgement.verdict
    assert verdict.violations == (), verdict.violations
    assert verdict.accepted and len(verdict.upload) == 4
    assert [(r.label, r.name, r.size) for r in verdict.resources] == [
        ("logs", "empty.log", 0),
        ("physio", "notes.txt", 28),
        ("physio", "run1/ecg.tsv", 17),
        ("raw", "series.zip", (session / "Resources/raw/series.zip").stat().st_size),
        ("raw", "tracts.trk", (session / "Resources/raw/tracts.trk").stat().st_size),
    ]
    kinds = {x.path: x for x in judgement.session.files}
    for r in verdict.resources:
        assert r.path.startswith("Resources/") and r.stamp == kinds[r.path].stamp != 0
    assert sorted(verdict.ignored) == ["Resources/logs/.DS_Store", "Resources/logs/DICOMDIR"]


def test_real_dicom_and_nifti_in_resources_are_found_by_content(tmp_path: Path) -> None:
    session = real_session(tmp_path)
    res = session / "Resources"
    (res / "extra").mkdir()
    # a DICOM file of another study, renamed: content decides, and it counts for no study
    shutil.copyfile(MR_SERIES / "MR2" / "6273", res / "extra" / "notes.bin")
    (res / "nii").mkdir()
    shutil.copyfile(NIBABEL_DATA / "anatomical.nii", res / "nii" / "t1.dat")
    shutil.copyfile(NIBABEL_DATA / "example4d.nii.gz", res / "nii" / "bold.nii.gz")
    relpath = ("P1", "S01", "S01_MR1")
    verdict = judge(session, relpath, config_for(tmp_path)).verdict
    assert sorted((v.rule, v.subject) for v in verdict.violations) == [
        ("dicom-in-resources", "Resources/extra/notes.bin"),
        ("nifti", "Resources/nii/bold.nii.gz"),
        ("nifti", "Resources/nii/t1.dat"),
    ]
    allowed = config_for(tmp_path, ResourcesConfig(allow_converted=True))
    verdict = judge(session, relpath, allowed).verdict
    assert [v.rule for v in verdict.violations] == ["dicom-in-resources"]
    assert {"nii"} < {r.label for r in verdict.resources}
    assert sorted(u.path for u in verdict.upload) == sorted(
        p.name for p in session.iterdir() if p.is_file()
    )


def test_links_and_fifos_in_resources_are_unsafe(tmp_path: Path) -> None:
    session = real_session(tmp_path)
    (session / "Resources" / "logs" / "link.log").symlink_to(session / "MR1_4919.dcm")
    os.mkfifo(session / "Resources" / "logs" / "pipe")
    verdict = judge(session, ("P1", "S01", "S01_MR1"), config_for(tmp_path)).verdict
    assert sorted((v.rule, v.subject) for v in verdict.violations) == [
        ("unsafe-file", "Resources/logs/link.log"),
        ("unsafe-file", "Resources/logs/pipe"),
    ]
    assert "Resources/logs/link.log" not in {r.path for r in verdict.resources}
