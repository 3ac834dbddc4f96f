"""The "What to do" block of a failure report never contradicts a rule's own advice.

Every rule of model.Rule gets a report rendered from a violation made by the code that makes
it in the daemon (rules, routing, policy); the sentences the delivery writes inline are
repeated here. The checks read the advice's words, not report.py's table, so a wrong entry in
the table fails here.
"""

from __future__ import annotations

import dataclasses
import re
from typing import get_args

import pytest

from xnat_drop.core import completeness, cstore, depth, importfilter
from xnat_drop.core.config import (
    DEFAULT_RESOURCES,
    DEFAULT_RULES,
    ResourcesConfig,
    RoutingConfig,
)
from xnat_drop.core.errors import XnatRejectedError
from xnat_drop.core.model import (
    DicomHeader,
    FileFacts,
    FileKind,
    Outcome,
    Policy,
    Remedy,
    ResourceFile,
    Route,
    Rule,
    Session,
    Target,
    Verdict,
    Violation,
)
from xnat_drop.core.noheader import Files
from xnat_drop.core.policy import Failure, delivery_failed
from xnat_drop.core.report import RULE_REMEDIES, Report, render_text
from xnat_drop.core.routing import route
from xnat_drop.core.rules import evaluate, unknown_project
from xnat_drop.core.seriesfilter import DEFAULT_TAG, decide, from_config
from xnat_drop.core.xnatconfig import XnatConfig
from xnat_drop.service.resourcestep import conflict_words, partial_failure, resources_unsupported

MR = "1.2.840.10008.5.1.4.1.1.4"
TARGET = Target("P1", "S1", "E1")
RELPATH = ("P1", "S1", "E1")
URL = "https://xnat.example.org"


def header(n: int, *, study: str = "1.2.3", series: str = "1.2.3.1", **values: str) -> DicomHeader:
    image_type = ("ORIGINAL", "PRIMARY")
    return DicomHeader(
        MR, f"{series}.{n}", study, series, 1, "T1", image_type, "MR", values=tuple(values.items())
    )


def dicom(path: str, n: int, size: int = 10, **kw: str) -> FileFacts:
    return FileFacts(path, size, FileKind.DICOM, header(n, **kw), digest=f"d{n}")


def judged(
    *files: FileFacts, resources: ResourcesConfig = DEFAULT_RESOURCES, **rules: object
) -> list[Violation]:
    session = Session("E1", RELPATH, files)
    config = dataclasses.replace(DEFAULT_RULES, **rules)  # type: ignore[arg-type]
    return list(evaluate(session, config, Route(TARGET), resources).rejections)


def other(path: str, size: int = 10) -> FileFacts:
    return FileFacts(path, size, FileKind.OTHER)


def routed(relpath: tuple[str, ...], routing: RoutingConfig, *files: FileFacts) -> Violation:
    found = route(relpath, Session(relpath[-1], relpath, files), routing)
    assert found.violations, found
    return found.violations[0]


def rejected(rule: Rule, message: str, **kw: object) -> Violation:
    return XnatRejectedError(rule, message, **kw).violation  # type: ignore[arg-type]


T1 = dicom("t1/1.dcm", 1)
LAYOUT = RoutingConfig(("project", "subject", "session"))


# (name, violation): every rule at least once, each way a rule words its advice.
PHYSIO = ResourceFile("physio", "ecg.tsv", "resources/physio/ecg.tsv", 10)
DEFAULT_XNAT = XnatConfig("https://xnat.example.org", None, True, None, 5.0, 60.0)


def _filtered(policy: str, pattern: str) -> tuple[Violation, ...]:
    """What XNAT's series import filter (a project blacklist of `pattern`) makes of T1."""
    found = from_config(
        "project P1", "enabled", f'{{"mode": "blacklist", "list": "{pattern}"}}', {}.get
    )
    assert found is not None
    decision = decide([found], {DEFAULT_TAG: "T1"})
    return importfilter.plan([T1], {T1.path: decision}, [found], policy).violations


SAMPLES: list[tuple[str, Violation]] = [
    ("nifti", judged(T1, FileFacts("a.nii", 10, FileKind.NIFTI, note="NIfTI-1"))[0]),
    ("non-dicom", judged(T1, FileFacts("a.pdf", 10, FileKind.OTHER))[0]),
    ("archive", judged(T1, FileFacts("a.zip", 10, FileKind.ARCHIVE, note="zip"))[0]),
    (
        "compressed-dicom",
        judged(T1, FileFacts("a.dcm.gz", 10, FileKind.COMPRESSED_DICOM, note="gzip DICOM"))[0],
    ),
    ("unreadable", judged(T1, FileFacts("b.dcm", 10, FileKind.UNREADABLE_DICOM))[0]),
    ("empty", judged(T1, FileFacts("t1/2.dcm", 0, FileKind.EMPTY, note="an empty file"))[0]),
    ("unsafe", judged(T1, FileFacts("l", 0, FileKind.UNSAFE, note="a symbolic link"))[0]),
    (
        "derived",
        judged(
            T1,
            FileFacts(
                "moco/1.dcm",
                10,
                FileKind.DICOM,
                DicomHeader(MR, "9.1", "1.2.3", "9", 7, "MoCoSeries", ("DERIVED", "MOCO"), "MR"),
            ),
        )[0],
    ),
    (
        "duplicate",
        judged(T1, dataclasses.replace(dicom("t1/2.dcm", 1), digest="other"))[0],
    ),
    ("mixed", judged(T1, dicom("t2/1.dcm", 2, study="9.9", series="9.9.1"))[0]),
    ("phi", judged(dicom("t1/1.dcm", 1, PatientName="Doe^Jane"), phi=True)[0]),
    ("size-file", judged(dicom("t1/1.dcm", 1, size=500), max_file_bytes=100)[0]),
    ("size-session", judged(dicom("t1/1.dcm", 1, size=500), max_session_bytes=100)[0]),
    ("no-dicom", judged(FileFacts("x.txt", 1, FileKind.OTHER))[-1]),
    ("no-dicom-resources-only", judged(other("resources/logs/a.log"))[-1]),
    ("resource-layout", judged(T1, other("resources/ecg.tsv"))[0]),
    ("resource-two-folders", judged(T1, other("resources/logs/a"), other("Resources/logs/b"))[0]),
    ("resource-label", judged(T1, other("resources/my physio/ecg.tsv"))[0]),
    ("resource-label-reserved", judged(T1, other("resources/DICOM/ecg.tsv"))[0]),
    (
        "resource-label-not-listed",
        judged(T1, other("resources/misc/a.txt"), resources=ResourcesConfig(labels=("physio",)))[0],
    ),
    ("resource-name", judged(T1, other("resources/logs/run#1.log"))[0]),
    ("resource-name-catalog", judged(T1, other("resources/logs/x_catalog.xml"))[0]),
    ("dicom-in-resources", judged(T1, dicom("resources/extra/1.dcm", 2))[0]),
    (
        "compressed-dicom-in-resources",
        judged(T1, FileFacts("resources/x/a.dcm.gz", 10, FileKind.COMPRESSED_DICOM))[0],
    ),
    ("nifti-in-resources", judged(T1, FileFacts("resources/nii/a.nii", 10, FileKind.NIFTI))[0]),
    ("label-folder", routed(("P1", "S1", "E 1"), LAYOUT, T1)),
    ("label-missing", routed(("P1", "E1"), RoutingConfig(("project", "*", "session")), T1)),
    (
        "label-config",
        routed(("E1",), RoutingConfig(("session",), defaults=("P 1", "S1", "")), T1),
    ),
    (
        "label-dicom",
        routed(
            ("E1",),
            RoutingConfig(("session",), templates=("P1", "{PatientID}", "")),
            dicom("t1/1.dcm", 1, PatientID="S 1"),
        ),
    ),
    (
        "label-disagree",
        routed(
            ("E1",),
            RoutingConfig(("session",), templates=("P1", "{PatientID}", "")),
            dicom("t1/1.dcm", 1, PatientID="S1"),
            dicom("t1/2.dcm", 2, PatientID="S2"),
        ),
    ),
    ("unknown-project", unknown_project("P1")),
    (
        "incomplete-series",
        completeness.violations(
            [
                completeness.Shortfall(
                    Files("05_bold", 88, "05_bold/IM0001.dcm"),
                    88,
                    176,
                    "ImagesInAcquisition says 176",
                )
            ]
        )[0],
    ),
    ("late-files", completeness.late_files(17, 6.0, 1.8e9, f"{URL}/data/archive/x")),
    ("filter-reject", _filtered("reject", "T1")[0]),
    (
        "resource-conflict",
        partial_failure(
            "resource-conflict", URL, conflict_words(PHYSIO), PHYSIO, [PHYSIO], Remedy.CHOICE
        ),
    ),
    (
        "resource-mismatch",
        partial_failure(
            "resource-mismatch", URL, "1 file did not arrive intact", PHYSIO, [PHYSIO], Remedy.AGAIN
        ),
    ),
    (
        "resources-unsupported",
        resources_unsupported(
            dataclasses.replace(DEFAULT_XNAT, destination="prearchive"),
            "1.8.3",
            Verdict(TARGET, (), (T1,), (), (), resources=(PHYSIO,)),
        ),
    ),
    ("filter-nothing-left", _filtered("exclude", ".")[-1]),
    (
        "wrong-depth",
        depth.beside(
            Session("E1", RELPATH, (T1,)),
            depth.shape_of(Session("E1", RELPATH, (T1,))),
            [
                depth.Sibling(
                    "E2",
                    "incoming",
                    frozenset(depth.shape_of(Session("E1", RELPATH, (T1,))).studies),
                    frozenset({"other"}),
                )
            ],
            ("project", "subject", "session"),
        ),
    ),
    (
        "session-exists",
        rejected(
            "session-exists",
            f"XNAT already holds this session ({URL}/data/archive/projects/P1/subjects/S1/"
            "experiments/E1). Uploading would merge into it, so nothing was sent. If the new "
            'files belong to it, ask the administrator to set xnat.on_existing = "append" (or '
            '"replace"); otherwise give the session another label and drop it again.',
        ),
    ),
    (
        "already-delivered",
        Violation(
            "already-delivered",
            Policy.REJECT,
            "the whole session",
            f"This session was already delivered on 2026-12-03T16:02:00Z ({URL}/data/prearchive/"
            "projects/P1/20261203_170200123/E1); it was not uploaded again. If it must be sent "
            "again anyway, ask the data manager to run `xnat-drop retry --force` on this folder.",
        ),
    ),
    (
        "count-mismatch",
        rejected(
            "count-mismatch",
            "XNAT does not hold what was sent (scan 1: 3 files sent, 2 held). Drop the session "
            "again; if it fails the same way, tell the XNAT administrator.",
        ),
    ),
    (
        "count-mismatch-archived",
        rejected(
            "count-mismatch",
            "After archiving, XNAT does not hold what was sent (scan 1: 3 files sent, 2 held). "
            f"The session is at {URL}/data/archive/projects/P1/subjects/S1/experiments/E1: ask "
            "the XNAT administrator to check it.",
            remedy=Remedy.ADMIN,
        ),
    ),
    ("delivery-failed", delivery_failed((Failure(1.8e9, "HTTP 500"), Failure(1.8e9, "500")))),
    ("xnat-rejected", rejected("xnat-rejected", "XNAT refused the upload (400): bad.dcm")),
    (
        "xnat-empty-answer",
        rejected(
            "xnat-empty-answer",
            "XNAT accepted the upload but answered with no session: nothing was imported.",
        ),
    ),
    (
        "cstore-unsupported",
        cstore.unsupported(
            "Grayscale Softcopy Presentation State Storage", "Explicit VR Little Endian", 2
        ),
    ),
    ("routing-failed", cstore.routing_failed(4, "P1")),
    (
        "cstore-unrouted",
        cstore.unrouted(
            [FileFacts("1/a.dcm", 10, FileKind.DICOM, header=header(1))],
            Target("P1", "S1", "E1"),
            auto_archive=False,
        )
        or pytest.fail("routed"),
    ),
    (
        "xnat-unassigned",
        rejected(
            "xnat-unassigned",
            "XNAT filed the upload as /data/prearchive/projects/Unassigned/1/E1 instead of one "
            "session in project P1. Ask the XNAT administrator to move or delete it.",
        ),
    ),
]

# What the advice says -> what the "What to do" block must then not say (or must say).
NEW_NAME = re.compile(r"Rename|another label|in a folder that names|Split|its own session folder")
CHANGES = re.compile(
    r"\b([Rr]emove|Delete|[Cc]opy the (missing|series)|[Ee]xport|Fix the value|fix them|Replace"
    r"|unpack|decompress|[Mm]ove (it|these files|the files)( out of it)? into)\b"
)
ADMIN_FIRST = re.compile(r"(?i)(ask|tell) the (XNAT )?administrator")
NOTHING_TO_FIX = re.compile(r"already delivered")
SAME_NAME_BACK = re.compile(r"move (the folder|it) back to incoming/P1/S1/E1 to try again")
UNCHANGED = re.compile(r"Nothing in the folder needs to change|Nothing needs to be done")


def what_to_do(violations: list[Violation]) -> str:
    report = Report(
        Outcome.FAILED,
        Session("E1", RELPATH, ()),
        "failed/P1/S1/E1",
        1.8e9,
        None,
        TARGET,
        tuple(violations),
        incoming="incoming/P1/S1/E1",
    )
    text = render_text(report)
    return " ".join(text.split("What to do:", 1)[1].split())


def test_every_rule_has_a_remedy_and_a_sample() -> None:
    rules = set(get_args(Rule))
    assert rules <= set(RULE_REMEDIES), f"add to report.RULE_REMEDIES: {rules - set(RULE_REMEDIES)}"
    assert rules <= {v.rule for _, v in SAMPLES}, (
        f"add a sample: {rules - {v.rule for _, v in SAMPLES}}"
    )


@pytest.mark.parametrize(("name", "violation"), SAMPLES, ids=[name for name, _ in SAMPLES])
def test_the_generic_advice_never_contradicts_the_rules_own(
    name: str, violation: Violation
) -> None:
    advice = violation.sentence
    block = what_to_do([violation])
    assert "Nothing in the folder was changed or deleted by xnat-drop." in block
    if NEW_NAME.search(advice):
        assert not SAME_NAME_BACK.search(block), (advice, block)
        assert not UNCHANGED.search(block), (advice, block)
    if CHANGES.search(advice):
        assert not UNCHANGED.search(block), (advice, block)
    if ADMIN_FIRST.search(advice):
        assert "administrator" in block, (advice, block)
    if NOTHING_TO_FIX.search(advice):
        assert "Fix the problems" not in block and "to try again" not in block, block
    if not (NEW_NAME.search(advice) or CHANGES.search(advice)):
        assert "Fix the problems above" not in block, (advice, block)


def test_a_rename_and_a_fix_together_ask_for_both_and_never_the_same_name() -> None:
    rename = dict(SAMPLES)["label-folder"]
    fix = dict(SAMPLES)["nifti"]
    block = what_to_do([fix, rename])
    assert "Fix the other problems above in failed/P1/S1/E1." in block
    assert "put it back into incoming/ under its new name" in block
    assert not SAME_NAME_BACK.search(block)


def test_only_fixes_in_the_folder_send_it_back_under_the_same_name() -> None:
    block = what_to_do([dict(SAMPLES)["nifti"], dict(SAMPLES)["derived"]])
    assert block.startswith(
        "Fix the problems above in failed/P1/S1/E1, then move the folder back to "
        "incoming/P1/S1/E1 to try again."
    )


def test_a_split_names_the_folder_to_drop_the_parts_into() -> None:
    block = what_to_do([dict(SAMPLES)["mixed"]])
    assert "drop each part into incoming/P1/S1/ as a session folder of its own" in block


def test_already_delivered_says_there_is_nothing_to_do() -> None:
    block = what_to_do([dict(SAMPLES)["already-delivered"]])
    assert block.startswith("Nothing needs to be done: XNAT already has this session.")
