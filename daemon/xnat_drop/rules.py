"""The lab's upload rules: raw acquired DICOM only. Pure.

`evaluate` turns an inspected Session (plus the routing result) into a Verdict. Broken rules are
Violations carrying a rule id, the file or series, and a sentence a lab member can act on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from .config import RulesConfig
from .model import DicomHeader, FileFacts, FileKind, Policy, Session, Target, Verdict, Violation

# ImageType (0008,0008) tokens that mark scanner-derived images even when value 1 says
# ORIGINAL (older Siemens label diffusion maps and MoCo that way; dicom-notes.md §1).
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
# SOP classes that are never acquired images.
DERIVED_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture (a screenshot or rendered image)",
    "1.2.840.10008.5.1.4.1.1.7.1": "Secondary Capture (a screenshot or rendered image)",
    "1.2.840.10008.5.1.4.1.1.7.2": "Secondary Capture (a screenshot or rendered image)",
    "1.2.840.10008.5.1.4.1.1.7.3": "Secondary Capture (a screenshot or rendered image)",
    "1.2.840.10008.5.1.4.1.1.7.4": "Secondary Capture (a screenshot or rendered image)",
}
KIND_RULES = {
    FileKind.NIFTI: "nifti",
    FileKind.ANALYZE: "nifti",
    FileKind.OTHER: "non-dicom",
    FileKind.UNREADABLE_DICOM: "unreadable-dicom",
    FileKind.UNSAFE: "unsafe-file",
}


def derived_signal(header: DicomHeader, extra_markers: Iterable[str] = ()) -> str | None:
    """Why an image is scanner-derived, in words naming the attribute, or None if acquired."""
    values = tuple(v.upper() for v in header.image_type)
    if _is_kept(values):
        return None
    sop = DERIVED_SOP_CLASSES.get(header.sop_class_uid)
    if sop:
        return f"SOP Class UID (0008,0016) is {sop}"
    if values[:1] == ("DERIVED",):
        return "ImageType (0008,0008) value 1 is DERIVED"
    if values[1:2] == ("SECONDARY",):
        return "ImageType (0008,0008) value 2 is SECONDARY"
    markers = dict(DERIVED_TOKENS)
    markers.update(dict.fromkeys(extra_markers, "a configured derived marker"))
    for token in values:
        if token in markers:
            return f"ImageType (0008,0008) contains {token}: {markers[token]}"
    if header.photometric_interpretation.upper() == "PALETTE COLOR":
        return "PhotometricInterpretation (0028,0004) is PALETTE COLOR"
    return None


def _is_kept(image_type: tuple[str, ...]) -> bool:
    """Derived-by-label images labs keep: the MP2RAGE uniform image (DERIVED\\PRIMARY\\..\\UNI)."""
    return image_type[:2] == ("DERIVED", "PRIMARY") and "UNI" in image_type[2:]


def evaluate(session: Session, rules: RulesConfig, target: Target | Violation) -> Verdict:
    """Judge a session: which files go to XNAT, which rules are broken, where it goes."""
    violations: list[Violation] = []
    if isinstance(target, Violation):
        violations.append(target)
    ignored = [f.path for f in session.files if f.kind is FileKind.JUNK]

    for facts in session.files:
        rule = KIND_RULES.get(facts.kind)
        if rule is not None:
            violations.append(_file_violation(rule, _policy(rules, rule), facts))

    dicoms = [f for f in session.files if f.is_dicom and f.header is not None]
    violations.extend(_derived_series(dicoms, rules))

    excluded = {p for v in violations if v.policy is Policy.EXCLUDE for p in v.files}
    upload = tuple(f for f in dicoms if f.path not in excluded)
    if not upload:
        violations.append(_no_dicom(session, excluded))
    return Verdict(
        target=target if isinstance(target, Target) else None,
        violations=tuple(violations),
        upload=upload,
        excluded=tuple(sorted(excluded)),
        ignored=tuple(ignored),
    )


def _policy(rules: RulesConfig, rule: str) -> Policy:
    return rules.policy(rule) if rule != "unsafe-file" else Policy.REJECT


def _file_violation(rule: str, policy: Policy, facts: FileFacts) -> Violation:
    path, note = facts.path, facts.note
    detail = f" ({note})" if note else ""
    if rule == "nifti":
        what = "an Analyze/NIfTI image pair file" if facts.kind is FileKind.ANALYZE else "NIfTI"
        sentence = (
            f"“{path}” is {what}{detail}: data converted from DICOM. Only the scanner's raw "
            "DICOM may go to XNAT. Remove the converted files (keep them elsewhere) and drop "
            "the session again."
        )
    elif rule == "unreadable-dicom":
        sentence = (
            f"“{path}” looks like DICOM but cannot be read{detail}. The copy is probably "
            "incomplete or damaged: export this series again from the scanner or PACS."
        )
    elif rule == "unsafe-file":
        sentence = (
            f"“{path}” is {note or 'not a regular file'}; xnat-drop never follows or opens such "
            "entries. Replace it with the real file and drop the session again."
        )
    else:
        sentence = (
            f"“{path}” is not a DICOM file{detail}. Only DICOM images may be in the session: "
            "remove it and drop the session again."
        )
    return Violation(rule, policy, path, sentence, (path,), note or facts.kind.value)


def _derived_series(dicoms: list[FileFacts], rules: RulesConfig) -> list[Violation]:
    """One violation per derived SeriesInstanceUID (derived images may share SeriesNumber)."""
    by_series: dict[str, list[FileFacts]] = defaultdict(list)
    for facts in dicoms:
        assert facts.header is not None
        by_series[facts.header.series_instance_uid].append(facts)
    policy = rules.policy("derived-series")
    found = []
    for members in by_series.values():
        signal = next(
            (
                s
                for f in members
                if f.header is not None
                and (s := derived_signal(f.header, rules.extra_derived_markers))
            ),
            None,
        )
        if signal is None:
            continue
        name = series_name(members[0].header)
        files = tuple(sorted(f.path for f in members))
        count = f"{len(files)} file{'s' if len(files) != 1 else ''}, e.g. “{files[0]}”"
        sentence = (
            f"{name[0].upper()}{name[1:]} ({count}) was derived by the scanner, not acquired: "
            f"{signal}. Leave this series out of the export and drop the session again."
        )
        violation = Violation("derived-series", policy, name, sentence, files, f"{count}; {signal}")
        found.append((_series_sort_key(members[0].header), violation))
    return [v for _, v in sorted(found, key=lambda item: item[0])]


def series_name(header: DicomHeader | None) -> str:
    """How a report names a series: `series 5 “MoCoSeries”`."""
    if header is None:
        return "an unknown series"
    number = f" {header.series_number}" if header.series_number is not None else ""
    desc = f" “{header.series_description}”" if header.series_description else ""
    if not number and not desc:
        return f"series {header.series_instance_uid or 'without a SeriesInstanceUID'}"
    return f"series{number}{desc}"


def _series_sort_key(header: DicomHeader | None) -> tuple[int, str]:
    if header is None:
        return (1 << 31, "")
    number = header.series_number if header.series_number is not None else 1 << 30
    return (number, header.series_instance_uid)


def _no_dicom(session: Session, excluded: set[str]) -> Violation:
    if excluded:
        sentence = (
            "Every DICOM file of this session was left out by the rules above, so nothing is "
            "left to upload. Fix the problems listed and drop the session again."
        )
    else:
        sentence = (
            "The folder holds no DICOM images, so there is nothing to upload. Check that the "
            "export from the scanner or PACS wrote DICOM files into this folder."
        )
    return Violation("no-dicom", Policy.REJECT, session.display, sentence)
