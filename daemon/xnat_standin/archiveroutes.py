"""The archive's routes: projects, their subjects and experiments, and the experiments'
scans and DICOM files (xnat-api.md §6). Lists answer XNAT's ResultSets (every value a string),
single items answer item JSON; session resources are ``sessionres``'s."""

from __future__ import annotations

import fnmatch
from typing import Any

from . import pages
from .archive import Experiment
from .call import Call
from .pages import Reply, java_timestamp
from .scans import Scan, scan_type
from .sessionres import FILE_COLUMNS, RESOURCE_COLUMNS, ResourceRoutes
from .store import Project, Store

NO_PROJECT = "Unable to find the specified experiment."  # sic: ProjectResource's message
NO_SUBJECT = "Unable to find the specified subject."
NO_EXPERIMENT = "Unable to find the specified experiment."

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


class ArchiveRoutes:
    """GET on projects, subjects, experiments and scans."""

    def __init__(self, store: Store, resources: ResourceRoutes) -> None:
        self.store = store
        self.resources = resources

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
            experiment = self.store.archive.experiment(tail[1], project.id)
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
                    "insert_date": java_timestamp(s.insert_date),
                    "insert_user": "",
                    "URI": f"/data/subjects/{s.id}",
                }
                for s in self.store.archive.subjects(project.id)
            ]
            return pages.table(
                ("ID", "project", "label", "insert_date", "insert_user", "URI"),
                rows,
                call.format,
                extra={"totalRecords": len(rows)},
            )
        subject = self.store.archive.subject(project.id, rest[0])
        if subject is None:
            return pages.status_page(404, NO_SUBJECT)
        if len(rest) == 1:
            experiments = [
                e for e in self.store.archive.experiments(project.id) if e.subject_id == subject.id
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
        experiment = self.store.archive.experiment(rest[2], project.id)
        if experiment is None or experiment.subject_id != subject.id:
            return pages.status_page(404, NO_EXPERIMENT)
        return self.experiment(call, experiment, rest[3:])

    def experiment_list(self, call: Call, project: str | None, subject_id: str | None) -> Reply:
        requested = call.query.get("columns")
        columns = [c for c in requested.split(",") if c] if requested else list(_EXPERIMENT_COLUMNS)
        if "URI" not in columns:
            columns.append("URI")
        rows = []
        for experiment in self.store.archive.experiments(project):
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
        subject = self.store.archive.subject_by_id(experiment.subject_id)
        return {
            "ID": experiment.id,
            "project": experiment.project,
            "date": experiment.date,
            "time": experiment.time,
            "xsiType": experiment.xsi_type,
            "label": experiment.label,
            "insert_date": java_timestamp(experiment.insert_date),
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
            subject = self.store.archive.subject_by_id(experiment.subject_id)
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
            path = self.store.archive.experiment_dir(experiment) / "SCANS" / chosen[0].id / "DICOM"
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
                        "digest": self.store.archive.file_digest(experiment, scan.id, name),
                    }
                )
        return pages.table(FILE_COLUMNS, rows, call.format, extra={"totalRecords": len(rows)})


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
