"""Session resources: the files a session delivers beside its images. Pure.

A session folder may hold a reserved folder (`resources.folder`, "resources" by default,
matched ignoring case, directly in the session folder) with one folder per resource label.
Every file below a label folder, at any depth, is a file of that resource:
`resources/physio/run1/ecg.tsv` is the file "run1/ecg.tsv" of the resource "physio". `split`
tells these files from the session's image files; `judge` decides which of them go to XNAT as
they are and which break a rule:

- resource-layout: a file directly in the reserved folder (no label folder), or a second
  spelling of that folder (`resources/` and `Resources/` side by side);
- resource-label: a label folder whose name XNAT cannot use (names.resource_label_problem), or
  one not in `resources.labels` when the lab lists them;
- resource-name: a folder or file name XNAT would not store as it is (names.resource_name_problem);
- dicom-in-resources: DICOM (also damaged or gzip-compressed DICOM), which would reach XNAT past
  its importer, its anonymisation and its series filters;
- nifti: converted data, unless `resources.allow_converted`.

Archives (never unpacked) and any other file, empty ones too, are resource files. Junk is
ignored and links and special files are unsafe-file, as everywhere (rules.py). Messages name
files and folders only, never a DICOM header value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from xnat_drop.core.config import ResourcesConfig, RulesConfig
from xnat_drop.core.filetable import parted
from xnat_drop.core.model import (
    FileFacts,
    FileKind,
    Remedy,
    ResourceFile,
    Rule,
    Violation,
)
from xnat_drop.core.names import resource_label_problem, resource_name_problem
from xnat_drop.core.text import plural

# What may not be a resource file because it is DICOM: it belongs with the images.
DICOM_KINDS = frozenset(
    {
        FileKind.DICOM,
        FileKind.DICOM_NO_PREAMBLE,
        FileKind.UNREADABLE_DICOM,
        FileKind.COMPRESSED_DICOM,
    }
)
CONVERTED_KINDS = frozenset({FileKind.NIFTI, FileKind.ANALYZE, FileKind.CONVERTED})
# Judged elsewhere: junk is ignored, links and special files are unsafe-file (rules.py).
_NOT_JUDGED = frozenset({FileKind.JUNK, FileKind.UNSAFE})


@dataclass(frozen=True, slots=True)
class Judged:
    """The resource rules' answer: what is wrong, and the files that broke none of them
    (sorted by label, then name; other rules, such as size-limit, may still take some out)."""

    violations: tuple[Violation, ...]
    files: tuple[ResourceFile, ...]


def is_resource_path(path: str, folder: str) -> bool:
    """True when the session-relative `path` lies below the reserved folder `folder` (matched
    ignoring case, directly in the session folder); never when `folder` is ""."""
    head, slash, _ = path.partition("/")
    return bool(folder and slash) and head.casefold() == folder.casefold()


def split(
    files: Sequence[FileFacts], folder: str
) -> tuple[Sequence[FileFacts], Sequence[FileFacts]]:
    """The session's files as (image files, files below the reserved folder), in order."""
    if not folder:
        return files, ()
    return parted(files, lambda facts: is_resource_path(facts.path, folder))


def hint(folder: str) -> str:
    """The words telling where a file goes to be delivered as a resource ("" without a folder)."""
    if not folder:
        return ""
    return (
        " If it is not image data and belongs with the session, put it in a folder below "
        f"“{folder}/” named for what it holds, such as “{folder}/logs/”: it is then delivered "
        "as it is, as a session resource."
    )


def judge(held: Iterable[FileFacts], config: ResourcesConfig, rules: RulesConfig) -> Judged:
    """Judge the files below the reserved folder (`split`'s second part)."""
    files = [f for f in held if f.kind not in _NOT_JUDGED]
    spellings = list(dict.fromkeys(f.path.partition("/")[0] for f in files))
    kept = config.folder if config.folder in spellings else min(spellings, default="")
    violations: list[Violation] = []
    accepted: list[ResourceFile] = []
    misplaced: dict[str, list[str]] = defaultdict(list)  # other spellings of the folder
    labelled: dict[str, list[str]] = defaultdict(list)  # "resources/label" -> its bad files
    for facts in files:
        spelling, label, *rest = facts.path.split("/", 2)
        if facts.kind in DICOM_KINDS:
            violations.append(_dicom(facts, spelling, rules))
        elif spelling != kept:
            misplaced[spelling].append(facts.path)
        elif not rest:
            violations.append(_loose(facts, spelling, rules))
        elif resource_label_problem(label) or (config.labels and label not in config.labels):
            labelled[f"{spelling}/{label}"].append(facts.path)
        elif problem := _name_problem(rest[0]):
            violations.append(_named(facts, problem, rules))
        elif facts.kind in CONVERTED_KINDS and not config.allow_converted:
            violations.append(_converted(facts, spelling, rules))
        else:
            accepted.append(ResourceFile(label, rest[0], facts.path, facts.size, facts.stamp))
    for spelling, paths in misplaced.items():
        violations.append(_second_folder(spelling, kept, paths, rules))
    for folder, paths in labelled.items():
        violations.append(_labelled(folder, paths, config, rules))
    accepted.sort(key=lambda r: (r.label, r.name))
    return Judged(tuple(violations), tuple(accepted))


def _name_problem(name: str) -> str:
    """The first folder or file name of `name` XNAT cannot take, with why; "" if none."""
    for segment in name.split("/"):
        problem = resource_name_problem(segment)
        if problem:
            return f"the name “{segment}” {problem}"
    return ""


def _violation(
    rule: Rule,
    rules: RulesConfig,
    subject: str,
    sentence: str,
    files: tuple[str, ...],
    detail: str,
    remedy: Remedy | None = None,
) -> Violation:
    return Violation(rule, rules.policy(rule), subject, sentence, files, detail, remedy)


def _dicom(facts: FileFacts, folder: str, rules: RulesConfig) -> Violation:
    path = facts.path
    what = {
        FileKind.UNREADABLE_DICOM: "damaged DICOM",
        FileKind.COMPRESSED_DICOM: "a gzip-compressed DICOM file",
    }.get(facts.kind, "a DICOM file")
    fix = "decompress it and move it" if facts.kind is FileKind.COMPRESSED_DICOM else "move it"
    sentence = (
        f"“{path}” is {what} in “{folder}/”. Files there go to XNAT as they are, past XNAT's "
        "DICOM importer, its anonymisation and its series filters. Images belong with the "
        f"session's other images: {fix} out of “{folder}/” into an image folder of the "
        "session (or remove it), and drop the session again."
    )
    return _violation("dicom-in-resources", rules, path, sentence, (path,), what)


def _loose(facts: FileFacts, folder: str, rules: RulesConfig) -> Violation:
    path = facts.path
    sentence = (
        f"“{path}” lies directly in “{folder}/”, where each folder is one resource, named by "
        f"the folder. Move it into a folder there named for what it holds (such as "
        f"“{folder}/logs/”) and drop the session again."
    )
    return _violation("resource-layout", rules, path, sentence, (path,), "not in a folder")


def _second_folder(spelling: str, kept: str, paths: list[str], rules: RulesConfig) -> Violation:
    files = tuple(sorted(paths))
    count = f"{plural(len(files), 'file')}, e.g. “{files[0]}”"
    sentence = (
        f"The session holds two resources folders, “{kept}/” and “{spelling}/” ({count}). "
        f"Move the files of “{spelling}/” into “{kept}/”, remove the empty “{spelling}/”, and "
        "drop the session again."
    )
    return _violation("resource-layout", rules, f"{spelling}/", sentence, files, count)


def _labelled(
    folder: str, paths: list[str], config: ResourcesConfig, rules: RulesConfig
) -> Violation:
    files = tuple(sorted(paths))
    label = folder.split("/", 1)[1]
    count = f"{plural(len(files), 'file')}, e.g. “{files[0]}”"
    problem = resource_label_problem(label)
    remedy = None
    if problem:
        fix = (
            f"Replace the folder's name with one XNAT can use, such as “{_suggested(label)}”, "
            "and drop the session again."
        )
    else:
        allowed = ", ".join(f"“{a}”" for a in config.labels)
        problem = f"is not one of the lab's resource labels ({allowed}; resources.labels)"
        fix = (
            "Replace the folder's name with one of them and drop the session again, or ask the "
            "administrator to add it to resources.labels."
        )
        remedy = Remedy.CHOICE
    sentence = f"The resource folder “{folder}/” ({count}) {problem}. {fix}"
    return _violation("resource-label", rules, f"{folder}/", sentence, files, problem, remedy)


def _suggested(label: str) -> str:
    """A label XNAT can use made from `label` (its letters, digits, "_" and "-")."""
    kept = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in label)
    kept = kept.strip("_") or "files"
    word = kept if kept[0].isalpha() else f"r_{kept}"
    return word[:64] if word.upper() not in ("NULL", "DICOM", "SNAPSHOTS") else f"{word}_files"


def _named(facts: FileFacts, problem: str, rules: RulesConfig) -> Violation:
    path = facts.path
    sentence = (
        f"“{path}” cannot go to XNAT under this name: {problem}. Replace the name with one "
        "made of letters, digits, spaces and . _ - + only, and drop the session again."
    )
    return _violation("resource-name", rules, path, sentence, (path,), problem)


def _converted(facts: FileFacts, folder: str, rules: RulesConfig) -> Violation:
    path, note = facts.path, facts.note
    detail = f" ({note})" if note else ""
    sentence = (
        f"“{path}” is converted data{detail}. The lab does not deliver converted data to XNAT, "
        f"not even as a resource in “{folder}/” (resources.allow_converted is off): remove it "
        "(keep it elsewhere) and drop the session again."
    )
    return _violation("nifti", rules, path, sentence, (path,), note or facts.kind.value)
