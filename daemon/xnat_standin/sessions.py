"""Projects, subjects and experiments (archive lookups) and the prearchive (§6).

Lists answer XNAT's ResultSets (every value a string), single items answer item JSON; the
prearchive session URI also takes the ``build`` and ``commit`` actions and DELETE.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from . import pages
from .call import Call, flag, read_form
from .pages import Reply
from .sessionres import FILE_COLUMNS, RESOURCE_COLUMNS, ResourceRoutes
from .store import (
    AUTO_ARCHIVE_CODES,
    UNASSIGNED,
    ArchiveError,
    ArchiveRequest,
    Experiment,
    PrearcRow,
    Project,
    Scan,
    Store,
    UnknownSessionError,
    UploadOptions,
    scan_type,
)
from .versions import XnatVersion

NO_PROJECT = "Unable to find the specified experiment."  # sic: ProjectResource's message
NO_SUBJECT = "Unable to find the specified subject."
NO_EXPERIMENT = "Unable to find the specified experiment."
NO_PREARC_DOCUMENT = "Unable to locate prearc resource."

_PREARCHIVE_COLUMNS = (
    "project",
    "timestamp",
    "lastmod",
    "uploaded",
    "scan_date",
    "scan_time",
    "subject",
    "folderName",
    "name",
    "tag",
    "status",
    "url",
    "autoarchive",
    "prevent_anon",
    "prevent_auto_commit",
    "SOURCE",
    "VISIT",
    "PROTOCOL",
    "TIMEZONE",
)
_EXPERIMENT_COLUMNS = ("ID", "project", "date", "xsiType", "label", "insert_date", "URI")
_EXPERIMENT_SHORTCUTS = frozenset(
    {
        "ID",
        "project",
        "date",
        "xsiType",
        "label",
        "insert_date",
        "URI",
        "UID",
        "subject_label",
        "subject_ID",
        "modality",
        "time",
    }
)
_SCAN_COLUMNS = (
    "xnat_imagescandata_id",
    "ID",
    "type",
    "quality",
    "xsiType",
    "note",
    "series_description",
    "URI",
)


class SessionResources:
    """GET on projects, subjects, experiments and the prearchive; prearchive actions."""

    def __init__(self, store: Store, version: XnatVersion, resources: ResourceRoutes) -> None:
        self.store = store
        self.version = version
        self.resources = resources

    # -- projects, subjects, experiments ------------------------------------------------

    def projects(self, call: Call, rest: list[str]) -> Reply:
        if call.method != "GET" and "resources" not in rest:  # session resources take writes
            return pages.status_page(405)
        if not rest:
            rows = [
                {
                    "ID": p.id,
                    "secondary_ID": p.id,
                    "name": p.name,
                    "description": "",
                    "pi_firstname": "",
                    "pi_lastname": "",
                    "URI": f"/data/projects/{p.id}",
                }
                for p in self.store.projects()
            ]
            return pages.table(
                ("ID", "secondary_ID", "name", "description", "pi_firstname", "pi_lastname", "URI"),
                rows,
                call.format,
                extra={"totalRecords": len(rows)},
            )
        project = self.store.project(rest[0])
        if project is None:
            return pages.status_page(404, NO_PROJECT)
        tail = rest[1:]
        if not tail:
            return pages.items_reply([_project_item(project)], call.format)
        if tail == ["prearchive_code"]:
            return pages.text(200, str(project.prearchive_code))
        if tail[:1] == ["subjects"]:
            return self._subjects(call, project, tail[1:])
        if tail[:1] == ["experiments"]:
            if len(tail) == 1:
                return self.experiment_list(call, project.id, None)
            experiment = self.store.experiment(tail[1], project.id)
            if experiment is None:
                return pages.status_page(404, NO_EXPERIMENT)
            return self.experiment(call, experiment, tail[2:])
        return pages.status_page(404)

    def _subjects(self, call: Call, project: Project, rest: list[str]) -> Reply:
        if not rest:
            rows = [
                {
                    "ID": s.id,
                    "project": s.project,
                    "label": s.label,
                    "insert_date": _timestamp(s.insert_date),
                    "insert_user": "",
                    "URI": f"/data/subjects/{s.id}",
                }
                for s in self.store.subjects(project.id)
            ]
            return pages.table(
                ("ID", "project", "label", "insert_date", "insert_user", "URI"),
                rows,
                call.format,
                extra={"totalRecords": len(rows)},
            )
        subject = self.store.subject(project.id, rest[0])
        if subject is None:
            return pages.status_page(404, NO_SUBJECT)
        if len(rest) == 1:
            experiments = [
                e for e in self.store.experiments(project.id) if e.subject_id == subject.id
            ]
            children = [_experiment_item(e, subject.label) for e in experiments]
            entry = pages.item(
                "xnat:subjectData",
                {"ID": subject.id, "label": subject.label, "project": subject.project},
                [("experiments/experiment", children)],
            )
            return pages.items_reply([entry], call.format)
        if rest[1:2] != ["experiments"]:
            return pages.status_page(404)
        if len(rest) == 2:
            return self.experiment_list(call, project.id, subject.id)
        experiment = self.store.experiment(rest[2], project.id)
        if experiment is None or experiment.subject_id != subject.id:
            return pages.status_page(404, NO_EXPERIMENT)
        return self.experiment(call, experiment, rest[3:])

    def experiment_list(self, call: Call, project: str | None, subject_id: str | None) -> Reply:
        requested = call.query.get("columns")
        columns = [c for c in requested.split(",") if c] if requested else list(_EXPERIMENT_COLUMNS)
        if "URI" not in columns:
            columns.append("URI")
        rows = []
        for experiment in self.store.experiments(project):
            if subject_id is not None and experiment.subject_id != subject_id:
                continue
            values = self._experiment_values(experiment)
            if all(
                fnmatch.fnmatchcase(values.get(key, ""), wanted)
                for key, wanted in call.query.items()
                if key in _EXPERIMENT_SHORTCUTS
            ):
                rows.append(values)
        return pages.table(columns, rows, call.format, extra={"totalRecords": len(rows)})

    def _experiment_values(self, experiment: Experiment) -> dict[str, str]:
        subject = self.store.subject_by_id(experiment.subject_id)
        return {
            "ID": experiment.id,
            "project": experiment.project,
            "date": experiment.date,
            "time": experiment.time,
            "xsiType": experiment.xsi_type,
            "label": experiment.label,
            "insert_date": _timestamp(experiment.insert_date),
            "URI": f"/data/experiments/{experiment.id}",
            "UID": experiment.uid,
            "subject_label": subject.label if subject else "",
            "subject_ID": experiment.subject_id,
            "modality": experiment.modality,
        }

    def experiment(self, call: Call, experiment: Experiment, rest: list[str]) -> Reply:
        if rest[:1] == ["resources"]:
            return self.resources.archive(call, experiment, rest[1:])
        if call.method != "GET":
            return pages.status_page(405)
        if not rest:
            subject = self.store.subject_by_id(experiment.subject_id)
            entry = _experiment_item(experiment, subject.label if subject else "")
            return pages.items_reply([entry], call.format)
        if rest[0] != "scans":
            return pages.status_page(404)
        base = f"/data/experiments/{experiment.id}/scans"
        scans = list(experiment.scans.values())
        if len(rest) == 1:
            rows = [
                {
                    "xnat_imagescandata_id": _scan_number(experiment, scan.id),
                    "ID": scan.id,
                    "type": scan.series_description,
                    "quality": "usable",
                    "xsiType": scan_type(scan.modality),
                    "note": "",
                    "series_description": scan.series_description,
                    "URI": f"{base}/{scan.id}",
                }
                for scan in scans
            ]
            return pages.table(_SCAN_COLUMNS, rows, call.format)
        chosen = scans if rest[1] == "ALL" else [s for s in scans if s.id == rest[1]]
        if not chosen:
            return pages.status_page(404)
        tail = rest[2:]
        if tail == ["resources"]:
            rows = [_resource_row(experiment, scan) for scan in chosen]
            return pages.table(
                RESOURCE_COLUMNS, rows, call.format, extra={"totalRecords": len(rows)}
            )
        if tail[:1] == ["resources"] and len(tail) >= 3 and tail[2] == "files":
            wanted = tail[1]
            chosen = [s for s in chosen if wanted in ("DICOM", str(_scan_number(experiment, s.id)))]
            tail = tail[2:]
        if tail[:1] != ["files"] or not chosen:
            return pages.status_page(404)
        if len(tail) == 2 and len(chosen) == 1:
            path = self.store.experiment_dir(experiment) / "SCANS" / chosen[0].id / "DICOM"
            if tail[1] not in chosen[0].files:
                return pages.status_page(404)
            return Reply(200, (path / tail[1]).read_bytes(), "application/dicom")
        if len(tail) != 1:
            return pages.status_page(404)
        rows = []
        for scan in chosen:
            resource = _scan_number(experiment, scan.id)
            for name, stored in sorted(scan.files.items()):
                rows.append(
                    {
                        "Name": name,
                        "Size": stored.size,
                        "URI": f"{base}/{scan.id}/resources/{resource}/files/{name}",
                        "collection": "DICOM",
                        "file_tags": "",
                        "file_format": "DICOM",
                        "file_content": "RAW",
                        "cat_ID": resource,
                        "digest": self.store.file_digest(experiment, scan.id, name),
                    }
                )
        return pages.table(FILE_COLUMNS, rows, call.format, extra={"totalRecords": len(rows)})

    # -- prearchive ---------------------------------------------------------------------

    def prearchive(self, call: Call, rest: list[str]) -> Reply:
        tag = call.query.get("tag")
        if rest in ([], ["projects"]):
            if call.method != "GET":
                return pages.status_page(405)
            return self._prearchive_table(call, self.store.rows(None, tag))
        if rest[0] != "projects":
            return pages.status_page(404)
        if len(rest) == 2:
            if call.method != "GET":
                return pages.status_page(405)
            projects = rest[1].split(",")
            for project in projects:
                if project != UNASSIGNED and self.store.project(project) is None:
                    return pages.status_page(404)
            return self._prearchive_table(call, self.store.rows(projects, tag))
        if len(rest) < 4:
            return pages.status_page(404)
        project, timestamp, folder = rest[1], rest[2], rest[3]
        try:
            row = self.store.row(project, timestamp, folder)
        except UnknownSessionError:
            return pages.status_page(404)
        tail = rest[4:]
        if not tail:
            if call.method == "GET":
                return self._prearchive_session(call, row)
            if call.method == "POST":
                return self._prearchive_action(call, row)
            if call.method == "DELETE":
                self.store.delete(project, timestamp, folder)
                return pages.text(200, "")
            return pages.status_page(405)
        if tail[:1] == ["resources"] and len(tail) >= 2:
            return self.resources.prearchive(call, row, tail[1:])
        if call.method != "GET":
            return pages.status_page(405)
        if row.built_scans is None:
            return pages.status_page(404, NO_PREARC_DOCUMENT)
        built = row.built_scans
        if tail == ["scans"]:
            scan_rows = [
                {
                    "ID": s.id,
                    "xsiType": scan_type(s.modality),
                    "series_description": s.series_description,
                }
                for s in built.values()
            ]
            return pages.table(("ID", "xsiType", "series_description"), scan_rows, call.format)
        rows: list[dict[str, object]]
        if tail == ["resources"]:
            rows = [
                {
                    "category": "scans",
                    "cat_id": s.id,
                    "label": "DICOM",
                    "file_count": len(s.files),
                    "file_size": s.file_size,
                }
                for s in built.values()
            ]
            rows += self.resources.prearchive_rows(row)
            return pages.table(
                ("category", "cat_id", "label", "file_count", "file_size"), rows, call.format
            )
        if len(tail) == 3 and tail[0] == "scans" and tail[2] == "resources":
            scan = built.get(tail[1])
            if scan is None:
                return pages.status_page(404)
            rows = [{"label": "DICOM", "file_count": len(scan.files), "file_size": scan.file_size}]
            return pages.table(("label", "file_count", "file_size"), rows, call.format)
        return pages.status_page(404)

    def _prearchive_table(self, call: Call, rows: Sequence[PrearcRow]) -> Reply:
        return pages.table(
            _PREARCHIVE_COLUMNS, [self._prearchive_row(row) for row in rows], call.format
        )

    def _prearchive_row(self, row: PrearcRow) -> dict[str, str]:
        project = self.store.project(row.project) if row.project else None
        autoarchive = AUTO_ARCHIVE_CODES[project.prearchive_code] if project else ""
        return {
            "project": row.project_label,
            "timestamp": row.timestamp,
            "lastmod": _timestamp(row.lastmod),
            "uploaded": _timestamp(row.uploaded),
            "scan_date": row.scan_date,
            "scan_time": "",
            "subject": row.subject,
            "folderName": row.folder,
            "name": row.folder,
            "tag": row.study_uid,
            "status": row.status,
            "url": row.uri,
            "autoarchive": autoarchive,
            "prevent_anon": _bool(row.prevent_anon),
            "prevent_auto_commit": _bool(row.prevent_auto_commit),
            "SOURCE": row.source,
            "VISIT": row.visit,
            "PROTOCOL": row.protocol,
            "TIMEZONE": row.timezone,
        }

    def _prearchive_session(self, call: Call, row: PrearcRow) -> Reply:
        if call.format == "json":
            return self._prearchive_table(call, [row])
        if row.built_scans is None:
            return pages.status_page(
                404,
                "The named session exists, but its XNAT session "
                "document is not available. The session is likely invalid "
                "or incomplete.",
            )
        scans = [
            pages.item(
                scan_type(s.modality),
                {"ID": s.id, "UID": s.series_uid, "series_description": s.series_description},
            )
            for s in row.built_scans.values()
        ]
        entry = pages.item(
            "xnat:imageSessionData",
            {"label": row.folder, "UID": row.study_uid, "project": row.project_label},
            [("scans/scan", scans)],
        )
        return pages.items_reply([entry], "xml")

    def _prearchive_action(self, call: Call, row: PrearcRow) -> Reply:
        params = {**read_form(call), **call.query}
        action = params.get("action")
        key = row.key
        options = UploadOptions(
            source=params.get("SOURCE"),
            visit=params.get("VISIT"),
            protocol=params.get("PROTOCOL"),
            timezone=params.get("TIMEZONE"),
        )
        if action == "build":
            built = self.store.build(*key, options)
            return pages.text(200, "/data" + built.uri, "text/uri-list;charset=UTF-8")
        if action != "commit":
            message = (
                f"No action parameter was specified for the request by user {call.user}"
                if action is None
                else f"User {call.user} requested an unsupported action on prearchive "
                f"session: {action}"
            )
            return pages.status_page(400, message)
        built = self.store.build(*key, options)
        wants = flag(params.get("AA")) or flag(params.get("auto-archive"))
        if not (wants or self.store.should_auto_archive(built)):
            return pages.text(200, "/data" + built.uri, "text/uri-list;charset=UTF-8")
        try:
            uri = self.store.archive(*key, archive_request(params))
        except ArchiveError as error:
            if self.version.commit_failure_detailed:
                message = (
                    f"FAILED: Unable to archive {row.folder}: Operation Failed: {error.message}"
                )
            else:
                message = (
                    f"The session {row.project_label}/{row.timestamp}/{row.folder} did "
                    "not return a valid data URI."
                )
            return pages.status_page(500, message)
        return pages.text(301, "/data" + uri)


def archive_request(params: Mapping[str, str]) -> ArchiveRequest:
    overwrite = params.get("overwrite") or ""
    return ArchiveRequest(
        project=params.get("project") or None,
        subject=params.get("subject") or params.get("SUBJECT_ID") or None,
        label=params.get("session") or params.get("EXPT_LABEL") or params.get("label") or None,
        override=overwrite in ("delete", "override"),
        overwrite_files=flag(params.get("overwrite_files")),
    )


def _project_item(project: Project) -> dict[str, Any]:
    aliases = [pages.item("xnat:projectData_alias", {"alias": alias}) for alias in project.aliases]
    return pages.item(
        "xnat:projectData",
        {"ID": project.id, "secondary_ID": project.id, "name": project.name, "active": "true"},
        [("aliases/alias", aliases)],
    )


def _experiment_item(experiment: Experiment, subject_label: str) -> dict[str, Any]:
    scans = [
        pages.item(
            scan_type(scan.modality),
            {
                "ID": scan.id,
                "type": scan.series_description,
                "series_description": scan.series_description,
                "UID": scan.series_uid,
                "quality": "usable",
                "image_session_ID": experiment.id,
                "project": experiment.project,
                "xnat_imageScanData_id": _scan_number(experiment, scan.id),
            },
            [
                (
                    "file",
                    [
                        pages.item(
                            "xnat:resourceCatalog",
                            {
                                "label": "DICOM",
                                "format": "DICOM",
                                "content": "RAW",
                                "xnat_abstractresource_id": _scan_number(experiment, scan.id),
                                "file_count": len(scan.files),
                                "file_size": scan.file_size,
                                "URI": f"SCANS/{scan.id}/DICOM/scan_{scan.id}_catalog.xml",
                            },
                        )
                    ],
                )
            ],
        )
        for scan in experiment.scans.values()
    ]
    fields: dict[str, object] = {
        "ID": experiment.id,
        "label": experiment.label,
        "project": experiment.project,
        "subject_ID": experiment.subject_id,
        "UID": experiment.uid,
        "modality": experiment.modality,
    }
    if experiment.date:
        fields["date"] = experiment.date
    if experiment.time:
        fields["time"] = experiment.time
    if subject_label:
        fields["dcmPatientName"] = subject_label
    return pages.item(experiment.xsi_type, fields, [("scans/scan", scans)])


def _resource_row(experiment: Experiment, scan: Scan) -> dict[str, object]:
    number = _scan_number(experiment, scan.id)
    return {
        "xnat_abstractresource_id": number,
        "label": "DICOM",
        "element_name": "xnat:resourceCatalog",
        "category": "scans",
        "cat_id": scan.id,
        "cat_desc": "",
        "file_count": len(scan.files),
        "file_size": scan.file_size,
        "tags": "",
        "content": "RAW",
        "format": "DICOM",
    }


def _scan_number(experiment: Experiment, scan_id: str) -> int:
    """A stable numeric id for a scan (and its one DICOM resource)."""
    index = list(experiment.scans).index(scan_id)
    return int(experiment.id.rsplit("E", 1)[-1]) * 1000 + index + 1


def _timestamp(value: datetime) -> str:
    """``java.sql.Timestamp.toString()``: milliseconds, trailing zeros trimmed to ".0"."""
    fraction = f"{value.microsecond // 1000:03d}".rstrip("0") or "0"
    return value.strftime("%Y-%m-%d %H:%M:%S.") + fraction


def _bool(value: bool) -> str:
    return "true" if value else "false"
