"""The lab's upload rules: raw acquired DICOM only. Pure.

`evaluate` turns an inspected Session and its Route into a Verdict. Broken rules are Violations
carrying a rule id, the file or series, and a sentence a lab member can act on. Rule ids:
nifti, derived-series, non-dicom, unreadable-dicom, unsafe-file, duplicate-instance,
mixed-studies, phi, size-limit, no-dicom (and bad-label from routing). The files below the
session's resources folder are judged by core/resources.py (resource-layout, resource-label,
resource-name, dicom-in-resources, nifti) and go to `Verdict.resources`, never to the upload;
no rule about DICOM files (duplicates, studies, completeness, PHI) counts them.

No sentence quotes a header value (core/noheader.py): a series or a study is named by its
files, a derived marker by the attribute and xnat-drop's words or the configured pattern.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from posixpath import dirname

from xnat_drop.core import completeness, resources, sopclasses
from xnat_drop.core.config import DEFAULT_RESOURCES, ResourcesConfig, RulesConfig
from xnat_drop.core.filerules import KIND_RULES, file_violation, size_limits
from xnat_drop.core.filetable import picked
from xnat_drop.core.instances import shared_uids
from xnat_drop.core.model import (
    DicomHeader,
    FileFacts,
    FileKind,
    Policy,
    Route,
    Rule,
    Session,
    Verdict,
    Violation,
)
from xnat_drop.core.noheader import capital, series_words, studies_words

# ImageType (0008,0008) / FrameType (0008,9007) tokens that mark scanner-derived images even
# when value 1 says ORIGINAL (older Siemens label diffusion maps and MoCo that way).
DERIVED_TOKENS: dict[str, str] = {
    "MOCO": "motion-corrected by the scanner (MoCo)",
    "ADC": "an ADC map",
    "EADC": "an exponential ADC map",
    "TRACEW": "a trace-weighted diffusion map",
    "TRACE": "a diffusion trace map",
    "FA": "a fractional anisotropy (FA) map",
    "COLFA": "a colour FA map",
    "TENSOR": "a diffusion tensor map",
    "MPR": "a multiplanar reformat (MPR)",
    "CSA MPR": "a multiplanar reformat (MPR)",
    "MIP": "a maximum intensity projection (MIP)",
    "MIP_SAG": "a maximum intensity projection (MIP)",
    "MIP_COR": "a maximum intensity projection (MIP)",
    "MIP_TRA": "a maximum intensity projection (MIP)",
    "CSA MIP": "a maximum intensity projection (MIP)",
    "PROJECTION IMAGE": "a projection image",
    "TTEST": "a statistical (t-test) map",
    "PERFUSION": "a perfusion map",
    "RCBF": "a cerebral blood flow map",
}


def derived_signal(header: DicomHeader, rules: RulesConfig) -> str | None:
    """Why an image is scanner-derived, in words naming the attribute, or None if acquired.

    The SOP class table (sopclasses.py) decides first: a derived class is derived whatever its
    markers say, a non-image object (report, document, spectra, raw data) is never derived.
    """
    known = sopclasses.sop_class(header.sop_class_uid)
    if known is not None:
        kind, words = known
        return f"SOP Class UID (0008,0016) is {words}" if kind == sopclasses.DERIVED else None
    types = [("ImageType (0008,0008)", tuple(v.upper() for v in header.image_type))]
    types += [("FrameType (0008,9007)", tuple(v.upper() for v in ft)) for ft in header.frame_types]
    description = header.series_description
    # A keep-list entry exempts its own marker only: a kept token (UNI) the token and the
    # DERIVED/SECONDARY label the vendor gives that image, a kept description pattern the
    # description patterns and that label. Every other marker (MOCO, ADC, ...) still counts.
    kept_tokens = {
        t for _, values in types for t in values[2:] if t in rules.keep_image_type_tokens
    }
    kept_description = any(
        re.search(p, description, re.IGNORECASE) for p in rules.keep_description_patterns
    )
    if not (kept_tokens or kept_description):
        for name, values in types:
            if values[:1] == ("DERIVED",):
                return f"{name} value 1 is DERIVED"
            if values[1:2] == ("SECONDARY",):
                return f"{name} value 2 is SECONDARY"
    for name, values in types:
        for token in values:
            if token in kept_tokens:
                continue
            if token in DERIVED_TOKENS:  # named by xnat-drop's own words, not the token
                return f"{name} marks it as {DERIVED_TOKENS[token]}"
            if token in rules.extra_derived_markers:  # the configuration's own text
                configured = "a marker configured as derived (rules.extra_derived_markers)"
                return f"{name} holds {token}, {configured}"
    for pattern in () if kept_description else rules.description_patterns:
        if re.search(pattern, description, re.IGNORECASE):
            return (
                f"SeriesDescription (0008,103E) matches the pattern `{pattern}` "
                "(rules.derived_description_patterns)"
            )
    if header.photometric_interpretation.upper() == "PALETTE COLOR":
        return "PhotometricInterpretation (0028,0004) is PALETTE COLOR"
    return None


def evaluate(
    session: Session,
    rules: RulesConfig,
    route: Route,
    resource_rules: ResourcesConfig = DEFAULT_RESOURCES,
    split: tuple[Sequence[FileFacts], Sequence[FileFacts]] | None = None,
) -> Verdict:
    """Judge a session: which files go to XNAT, which rules are broken, where it goes, and
    which files go as session resources (`resource_rules`: the [resources] table). `split` is
    resources.split of the session's files, when the caller made it already."""
    violations: list[Violation] = list(route.violations)
    ignored = [f.path for f in session.files if f.kind is FileKind.JUNK]
    folder = resource_rules.folder
    images, held = split or resources.split(session.files, folder)

    for facts in images:
        rule = KIND_RULES.get(facts.kind)
        if rule is not None:
            violations.append(file_violation(rule, _policy(rules, rule), facts, folder))
    for facts in held:
        if facts.kind is FileKind.UNSAFE:
            violations.append(file_violation("unsafe-file", Policy.REJECT, facts, folder))
    judged = resources.judge(held, resource_rules, rules)
    violations.extend(judged.violations)
    violations.extend(size_limits(session, rules))

    # Each pass below reads the files once and keeps only what it names (core/filetable.py);
    # a subset is made only when some file is to be left out.
    dicoms = picked(images, lambda f: f.is_dicom and f.header is not None)
    violations.extend(_derived_series(dicoms, session, rules))
    involved = {p for v in violations for p in v.files}
    unjudged = picked(dicoms, lambda f: f.path not in involved) if involved else dicoms
    copies, duplicate_violations = _duplicates(unjudged)
    violations.extend(duplicate_violations)
    involved |= {p for v in duplicate_violations for p in v.files}
    candidates = (
        picked(dicoms, lambda f: f.path not in involved and f.path not in copies)
        if involved or copies
        else dicoms
    )
    violations.extend(_mixed_studies(candidates))
    if rules.phi:
        subject = route.target.subject if route.target is not None else ""
        violations.extend(_phi(candidates, rules.phi_tags, subject))
    if rules.incomplete_series == "reject":
        # Series another rule already takes out (derived, conflicting copies) are not counted.
        violations.extend(completeness.violations(completeness.shortfalls(candidates)))

    excluded = {p for v in violations if v.policy is Policy.EXCLUDE for p in v.files}
    upload = (
        picked(dicoms, lambda f: f.path not in excluded and f.path not in copies)
        if excluded or copies
        else dicoms
    )
    if not upload:
        held_paths = {f.path for f in held}
        violations.append(_no_dicom(session, excluded - held_paths))
    involved = {p for v in violations for p in v.files}
    return Verdict(
        target=route.target,
        violations=tuple(violations),
        upload=upload,
        excluded=tuple(sorted(excluded)),
        ignored=tuple(ignored),
        duplicates=tuple(sorted(copies)),
        notes=route.notes,
        resources=tuple(r for r in judged.files if r.path not in involved),
    )


def _policy(rules: RulesConfig, rule: Rule) -> Policy:
    return rules.policy(rule) if rule != "unsafe-file" else Policy.REJECT


def _derived_series(
    dicoms: Sequence[FileFacts], session: Session, rules: RulesConfig
) -> list[Violation]:
    """One violation per derived SeriesInstanceUID (derived images may share SeriesNumber).

    Non-image objects (sopclasses.py) are judged by their SOP class alone: one that shares a
    series with derived images is not taken out with them.
    """
    signals: dict[str, str | None] = {}  # by SeriesInstanceUID: the first file's signal
    firsts: dict[str, DicomHeader] = {}  # by SeriesInstanceUID: its first file's header
    for facts in dicoms:
        header = facts.header
        assert header is not None
        if sopclasses.is_non_image(header.sop_class_uid):
            continue
        uid = header.series_instance_uid
        if uid not in firsts:
            firsts[uid], signals[uid] = header, None
        if signals[uid] is None:
            signals[uid] = derived_signal(header, rules) or None
    derived = {uid: signal for uid, signal in signals.items() if signal is not None}
    if not derived:
        return []
    members: dict[str, list[str]] = defaultdict(list)
    for facts in dicoms:
        header = facts.header
        assert header is not None
        if header.series_instance_uid in derived and not sopclasses.is_non_image(
            header.sop_class_uid
        ):
            members[header.series_instance_uid].append(facts.path)
    policy = rules.policy("derived-series")
    found = []
    for uid, signal in derived.items():
        files = tuple(sorted(members[uid]))
        name = series_words(files)
        sentence = (
            f"{capital(name)} was derived by the scanner, not acquired: {signal}. "
            f"{_removal_advice(files, session)}"
        )
        violation = Violation("derived-series", policy, name, sentence, files, signal)
        found.append((_series_sort_key(firsts[uid]), violation))
    return [v for _, v in sorted(found, key=lambda item: item[0])]


def _removal_advice(files: tuple[str, ...], session: Session) -> str:
    """How to take these files out: their own folder if they have one, else the files."""
    folders = {dirname(p) for p in files}
    if len(folders) == 1 and (folder := folders.pop()):
        others = [f for f in session.files if dirname(f.path) == folder and f.path not in files]
        if not [f for f in others if f.kind is not FileKind.JUNK]:
            return f"Delete the folder “{folder}” and drop the session again."
    if len(files) <= 3:
        return f"Delete {', '.join(f'“{p}”' for p in files)} and drop the session again."
    return "Delete these files (all listed in the .report.json) and drop the session again."


def _duplicates(dicoms: Sequence[FileFacts]) -> tuple[set[str], list[Violation]]:
    """Files sharing a SOP Instance UID: identical copies are sent once, different ones reject."""
    shared = [[facts for _, facts in group] for group in shared_uids(dicoms)]
    copies: set[str] = set()
    violations = []
    for members in sorted(shared, key=lambda m: min(f.path for f in m)):
        paths = sorted(f.path for f in members)
        digests = {f.digest for f in members}
        if len(digests) == 1 and "" not in digests and not _unhashed(digests):
            copies.update(paths[1:])
            continue
        shown = ", ".join(f"“{p}”" for p in paths[:4]) + (" ..." if len(paths) > 4 else "")
        differ = "are too large to be compared" if _unhashed(digests) else "differ"
        sentence = (
            f"{len(paths)} files claim the same SOP Instance UID (0008,0018) but {differ} "
            f"({shown}). XNAT keeps only one object per UID, so one of them would be lost. "
            "Remove the wrong copy (often a re-export or an edited file) and drop the session "
            "again."
        )
        violations.append(
            Violation(
                "duplicate-instance",
                Policy.REJECT,
                f"{len(paths)} files with one SOP Instance UID",
                sentence,
                tuple(paths),
                shown,
            )
        )
    return copies, violations


def _unhashed(digests: set[str]) -> bool:
    """True when inspection did not hash some of these files (too large: see inspect.py)."""
    return any(d.startswith("unhashed-") for d in digests)


def _mixed_studies(dicoms: Sequence[FileFacts]) -> list[Violation]:
    """One violation when the files belong to more than one study, each study named by its
    files (never by its UID)."""
    studies = {f.header.study_instance_uid for f in dicoms if f.header is not None}
    if len(studies) < 2:
        return []
    by_study: dict[str, list[str]] = defaultdict(list)
    for facts in dicoms:
        assert facts.header is not None
        by_study[facts.header.study_instance_uid].append(facts.path)
    words = studies_words(list(by_study.values()))
    sentence = (
        f"The folder holds {words} (their StudyInstanceUID (0020,000D) differs). One session "
        "folder must hold exactly one study, or XNAT splits it into several sessions. Move each "
        "study into its own session folder and drop them again."
    )
    files = tuple(sorted(f.path for f in dicoms))
    return [
        Violation(
            "mixed-studies",
            Policy.REJECT,
            f"{len(by_study)} studies",
            sentence,
            files,
            words,
        )
    ]


def _phi(dicoms: Sequence[FileFacts], tags: tuple[str, ...], subject: str) -> list[Violation]:
    """Configured identifying attributes must be empty or equal to the subject label.

    The report never repeats the values: it names the attribute and the files only.
    """
    violations = []
    for tag in tags:
        offending = sorted(
            f.path
            for f in dicoms
            if f.header is not None
            and (value := f.header.value(tag).strip().rstrip("^"))
            and value != subject
        )
        if not offending:
            continue
        count = f"{len(offending)} file{'s' if len(offending) != 1 else ''}, e.g. “{offending[0]}”"
        sentence = (
            f"{tag} is filled in ({count}) and is not the subject label “{subject}”. The lab's "
            f"rules require {tag} to be empty or the subject label before data goes to XNAT. "
            "Export the session again with the lab's anonymisation profile and drop it again."
        )
        violations.append(Violation("phi", Policy.REJECT, tag, sentence, (), count))
    return violations


def _series_sort_key(header: DicomHeader | None) -> tuple[int, str]:
    if header is None:
        return (1 << 31, "")
    number = header.series_number if header.series_number is not None else 1 << 30
    return (number, header.series_instance_uid)


def _no_dicom(session: Session, excluded: Iterable[str]) -> Violation:
    if list(excluded):
        sentence = (
            "Every DICOM file of this session was left out by the rules above, so nothing is "
            "left to upload. Fix the problems listed and drop the session again."
        )
    else:
        sentence = (
            "The folder holds no DICOM files that could be uploaded. Check that the export "
            "from the scanner or PACS wrote DICOM files into this folder."
        )
    return Violation("no-dicom", Policy.REJECT, session.display, sentence)


def unknown_project(project: str) -> Violation:
    """XNAT has no such project: said before any upload, since XNAT would use "Unassigned"."""
    sentence = (
        f"XNAT has no project “{project}”, or the xnat-drop account cannot see it. XNAT would "
        "have filed the data under “Unassigned” without a word, so nothing was uploaded. Check "
        f"the project folder name “{project}”, or ask the XNAT administrator to create the "
        "project or give the xnat-drop account access, then drop the session again."
    )
    return Violation(
        "unknown-project", Policy.REJECT, f"project “{project}”", sentence, detail="not in XNAT"
    )
