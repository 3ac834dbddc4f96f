"""Response bodies in XNAT's shapes: status pages, ResultSets, item JSON, URI lists (§1.3, §1.4)."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any

# Restlet 1.1 Status descriptions, used when a resource sets a status without a message.
_RESTLET_DESCRIPTIONS = {
    400: "The request could not be understood by the server due to malformed syntax",
    401: "The request requires user authentication",
    403: "The server understood the request, but is refusing to fulfill it",
    404: "The server has not found anything matching the request URI",
    405: "The method specified in the request is not allowed for the resource identified by "
    "the request URI",
    409: "The request could not be completed due to a conflict with the current state of the "
    "resource",
    500: "The server encountered an unexpected condition which prevented it from fulfilling "
    "the request",
    501: "The server does not support the functionality required to fulfill the request",
    503: "The server is currently unable to handle the request due to a temporary overloading "
    "or maintenance of the server",
}


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete HTTP answer."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain;charset=UTF-8"
    headers: tuple[tuple[str, str], ...] = field(default=())


def status_page(status: int, message: str | None = None) -> Reply:
    """Restlet's HTML status page, the body of every error raised inside a ``/data`` resource."""
    description = message if message else _RESTLET_DESCRIPTIONS.get(status, _reason(status))
    section = f"10.4.{status - 399}" if status < 500 else f"10.5.{status - 499}"
    text = (
        "<html>\n<head>\n   <title>Status page</title>\n</head>\n<body>\n"
        f"<h3>{html.escape(description, quote=False)}</h3>"
        '<p>You can get technical details <a href="http://www.w3.org/Protocols/rfc2616/'
        f'rfc2616-sec10.html#sec{section}">here</a>.<br>\n'
        'Please continue your visit at our <a href="/">home page</a>.\n'
        "</p>\n</body>\n</html>\n"
    )
    return Reply(status, text.encode("utf-8"), "text/html;charset=UTF-8")


def servlet_error_page(status: int, message: str) -> Reply:
    """Tomcat's error page, the body of errors raised by the Spring security filters."""
    reason = _reason(status)
    text = (
        '<!doctype html><html lang="en"><head><title>HTTP Status '
        f"{status} – {reason}</title></head><body><h1>HTTP Status {status} – {reason}</h1>"
        '<hr class="line" /><p><b>Type</b> Status Report</p>'
        f"<p><b>Message</b> {html.escape(message)}</p>"
        '<hr class="line" /><h3>Apache Tomcat/9.0.85</h3></body></html>'
    )
    return Reply(status, text.encode("utf-8"), "text/html;charset=utf-8")


def text(status: int, body: str, content_type: str = "text/plain;charset=UTF-8") -> Reply:
    return Reply(status, body.encode("utf-8"), content_type)


def json_reply(data: object, status: int = 200) -> Reply:
    return Reply(status, json.dumps(data).encode("utf-8"), "application/json;charset=UTF-8")


def uri_list(uris: Sequence[str], response_format: str | None) -> Reply:
    """The importer's answer: each URI + CRLF (``text/uri-list``), or ``format=txt``."""
    if response_format == "txt":
        return text(200, "\r\n".join(uris))
    if response_format == "html":
        items = "".join(f"<li>{html.escape(uri)}</li>" for uri in uris)
        return text(200, f"<html><body><ul>{items}</ul></body></html>", "text/html;charset=UTF-8")
    return text(200, "".join(uri + "\r\n" for uri in uris), "text/uri-list;charset=UTF-8")


def table(
    columns: Sequence[str],
    rows: Iterable[Mapping[str, object]],
    response_format: str | None,
    *,
    extra: Mapping[str, object] | None = None,
    title: str = "",
) -> Reply:
    """An XFTTable: a ResultSet (JSON, all values strings), CSV, or an HTML table."""
    cells = [{column: _cell(row.get(column)) for column in columns} for row in rows]
    if response_format == "json":
        result: dict[str, Any] = {"Result": cells}
        for key, value in (extra or {}).items():
            result[key] = str(value)
        return json_reply({"ResultSet": result})
    if response_format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([cell[column] for column in columns] for cell in cells)
        return text(200, out.getvalue(), "text/csv;charset=UTF-8")
    head = "".join(f"<th>{html.escape(column)}</th>" for column in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell[column])}</td>" for column in columns) + "</tr>"
        for cell in cells
    )
    caption = f"<caption>{html.escape(title)}</caption>" if title else ""
    page = f"<html><body><table>{caption}<tr>{head}</tr>{body}</table></body></html>"
    return text(200, page, "text/html;charset=UTF-8")


def item(
    xsi_type: str,
    data_fields: Mapping[str, object],
    children: Sequence[tuple[str, Sequence[dict[str, Any]]]] = (),
    *,
    event_id: int = 1,
) -> dict[str, Any]:
    """One ``ItemJSONBuilder`` item; ``children`` are (field name, child items)."""
    return {
        "children": [{"field": name, "items": list(items)} for name, items in children if items],
        "meta": {"create_event_id": event_id, "xsi:type": xsi_type, "isHistory": False},
        "data_fields": dict(data_fields),
    }


def items_reply(items: Sequence[dict[str, Any]], response_format: str | None) -> Reply:
    """A single-item resource: item JSON for ``format=json``, a small XML document otherwise."""
    if response_format == "json":
        return json_reply({"items": list(items)})
    return text(200, "".join(_item_xml(entry) for entry in items), "text/xml;charset=UTF-8")


def _item_xml(entry: Mapping[str, Any]) -> str:
    element = str(entry["meta"]["xsi:type"])
    attributes = "".join(
        f' {key}="{html.escape(str(value))}"'
        for key, value in entry["data_fields"].items()
        if isinstance(value, (str, int, float))
    )
    inner = ""
    for child in entry.get("children", []):
        tag = "xnat:" + str(child["field"]).split("/")[0]
        inner += f"<{tag}>" + "".join(_item_xml(sub) for sub in child["items"]) + f"</{tag}>"
    return f'<{element} xmlns:xnat="http://nrg.wustl.edu/xnat"{attributes}>{inner}</{element}>'


def java_timestamp(value: datetime) -> str:
    """``java.sql.Timestamp.toString()``: milliseconds, trailing zeros trimmed to ".0"."""
    fraction = f"{value.microsecond // 1000:03d}".rstrip("0") or "0"
    return value.strftime("%Y-%m-%d %H:%M:%S.") + fraction


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
