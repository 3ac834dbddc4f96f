"""The prearchive's routes: listings as ResultSets (string values), one session, its scans and
resources, the ``build`` and ``commit`` actions and DELETE (xnat-api.md §6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import pages
from .archiving import ArchiveError, ArchiveRequest
from .call import Call, flag, read_form
from .pages import Reply, java_timestamp
from .prearchive import UNASSIGNED, PrearcRow, UnknownSessionError, UploadOptions
from .scans import scan_type
from .sessionres import ResourceRoutes
from .store import AUTO_ARCHIVE_CODES, Store
from .versions import XnatVersion

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


class PrearchiveRoutes:
    """GET, POST (actions) and DELETE below ``/data/prearchive``."""

    def __init__(self, store: Store, version: XnatVersion, resources: ResourceRoutes) -> None:
        self.store = store
        self.version = version
        self.resources = resources

    def route(self, call: Call, rest: list[str]) -> Reply:
        tag = call.query.get("tag")
        if rest in ([], ["projects"]):
            if call.method != "GET":
                return pages.status_page(405)
            return self._prearchive_table(call, self.store.prearchive.rows(None, tag))
        if rest[0] != "projects":
            return pages.status_page(404)
        if len(rest) == 2:
            if call.method != "GET":
                return pages.status_page(405)
            projects = rest[1].split(",")
            for project in projects:
                if project != UNASSIGNED and self.store.project(project) is None:
                    return pages.status_page(404)
            return self._prearchive_table(call, self.store.prearchive.rows(projects, tag))
        if len(rest) < 4:
            return pages.status_page(404)
        project, timestamp, folder = rest[1], rest[2], rest[3]
        try:
            row = self.store.prearchive.row(project, timestamp, folder)
        except UnknownSessionError:
            return pages.status_page(404)
        tail = rest[4:]
        if not tail:
            if call.method == "GET":
                return self._prearchive_session(call, row)
            if call.method == "POST":
                return self._prearchive_action(call, row)
            if call.method == "DELETE":
                self.store.prearchive.delete(project, timestamp, folder)
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
            "lastmod": java_timestamp(row.lastmod),
            "uploaded": java_timestamp(row.uploaded),
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
            built = self.store.prearchive.build(*key, options)
            return pages.text(200, "/data" + built.uri, "text/uri-list;charset=UTF-8")
        if action != "commit":
            message = (
                f"No action parameter was specified for the request by user {call.user}"
                if action is None
                else f"User {call.user} requested an unsupported action on prearchive "
                f"session: {action}"
            )
            return pages.status_page(400, message)
        built = self.store.prearchive.build(*key, options)
        wants = flag(params.get("AA")) or flag(params.get("auto-archive"))
        if not (wants or self.store.should_auto_archive(built)):
            return pages.text(200, "/data" + built.uri, "text/uri-list;charset=UTF-8")
        try:
            uri = self.store.commit(*key, archive_request(params))
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


def _bool(value: bool) -> str:
    return "true" if value else "false"
