"""The configuration keys of what xnat-drop shows and tells: the status files, the page, the
metrics file and the notifications (core/options.py holds the rest, in the example's order).
Pure: no I/O.
"""

from __future__ import annotations

from typing import Literal, get_args

from xnat_drop.core.schema import Kind, Option

ShareStatus = Literal["one", "per-project", "off"]
SmtpSecurity = Literal["starttls", "ssl", "none"]
WebhookFormat = Literal["off", "json", "slack"]
NotifyEvent = Literal["failed", "outage", "credentials", "stuck", "retrying"]
SHARE_STATUS: tuple[ShareStatus, ...] = get_args(ShareStatus)
SMTP_SECURITY: tuple[SmtpSecurity, ...] = get_args(SmtpSecurity)
WEBHOOK_FORMATS: tuple[WebhookFormat, ...] = get_args(WebhookFormat)
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = get_args(NotifyEvent)

SEEN = (
    Option("status", "share", Kind.TEXT, "one", choices=SHARE_STATUS, comment="""
        STATUS.txt beside incoming/ (never inside it) tells lab members without a shell what the
        daemon is doing: each session being copied, waiting, uploading or retrying, XNAT's
        state, and the last sessions delivered and failed. "per-project" writes
        STATUS-<project>.txt instead, one per project folder, for shares used by several
        groups; "off" writes none.
    """),
    Option("status", "html", Kind.FLAG, False, comment="""
        true also writes STATUS.html (or STATUS-<project>.html) beside it: static, no scripts.
    """),
    Option("status", "interval_seconds", Kind.SECONDS, 5, minimum=1.0, comment="""
        The files are rewritten (atomically) when something changed, at most this often.
    """),
    Option("status", "listed", Kind.COUNT, 10, minimum=1, comment="""
        How many of the last delivered and the last failed sessions the files list.
    """),
    Option("page", "listen", Kind.TEXT, "", example="", comment="""
        The read-only status page, e.g. "127.0.0.1:8870": "/" (HTML), "/status.json",
        "/metrics" (Prometheus) and "/healthz". "" = no page. It has no login: keep it on
        loopback and put a reverse proxy with authentication in front of it for other hosts
        (check-config warns otherwise). A port in use is logged; the daemon runs on without it.
    """),
    Option("page", "refresh_seconds", Kind.SECONDS, 10, minimum=1.0, comment="""
        The page reloads itself this often (an HTML refresh: no JavaScript).
    """),
    Option("metrics", "textfile", Kind.PATH, "", comment="""
        Also write the Prometheus metrics to this file (atomically, when the status changes),
        for node_exporter's textfile collector: metrics with no listener at all. It must end in
        ".prom". "" = no file.
    """),
    Option("notify", "email_to", Kind.STRINGS, (), comment="""
        Notifications (off while no address and no webhook is set): a failed session (one
        message each), an XNAT outage longer than outage_after_seconds (its start and its end),
        credentials refused, a folder blocked or still changing after watch.max_settle_seconds,
        a session retrying for longer than retrying_after_seconds. Messages wait in an outbox
        in the state directory until sent, so a restart neither loses nor repeats one. They
        hold folder names, XNAT labels, rule ids, counts and times, never a DICOM header value.
        email_to: the addresses that get every message.
    """),
    Option("notify", "projects", Kind.STRINGS, (), comment="""
        Addresses per XNAT project, "PROJECT=address,address": they get that project's session
        messages (besides email_to), e.g. ["NEURO=neuro-lab@example.org"].
    """),
    Option("notify", "owners", Kind.STRINGS, (), comment="""
        The person who dropped a session, "user=address" (a login name or a uid, the owner of
        the session folder): they get the messages about that session, e.g.
        ["alice=alice@example.org", "1002=bob@example.org"].
    """),
    Option("notify", "email_from", Kind.TEXT, "", comment="""
        The From: address. "" = xnat-drop@ this machine's host name.
    """),
    Option("notify", "smtp_host", Kind.TEXT, "", example="", comment="""
        The mail server. The password (when smtp_user is set) comes from the systemd credential
        "smtp-password" (LoadCredential=) or smtp_password_file, never from this file.
    """),
    Option("notify", "smtp_port", Kind.COUNT, 0, minimum=0,
           note="0 = 587, 465 for ssl, 25 for none"),
    Option("notify", "smtp_security", Kind.TEXT, "starttls", choices=SMTP_SECURITY, comment="""
        "starttls", "ssl" (SMTPS) or "none" (a relay on this machine only). Certificates are
        verified against the system's CA store, or smtp_ca_bundle.
    """),
    Option("notify", "smtp_ca_bundle", Kind.PATH, ""),
    Option("notify", "smtp_user", Kind.TEXT, "", note='"" = no login'),
    Option("notify", "smtp_password_file", Kind.PATH, "", note="readable by its owner only"),
    Option("notify", "webhook", Kind.TEXT, "off", choices=WEBHOOK_FORMATS, comment="""
        A webhook: "json" POSTs {"event", "subject", "text", "session", ...}; "slack" POSTs
        {"text": ...} (Slack, Mattermost). The URL holds a secret: it comes from the systemd
        credential "webhook-url" or webhook_url_file, never from this file.
    """),
    Option("notify", "webhook_url_file", Kind.PATH, "", note="readable by its owner only"),
    Option("notify", "events", Kind.STRINGS, NOTIFY_EVENTS, comment="""
        Which events to send: "failed", "outage", "credentials", "stuck", "retrying".
    """),
    Option("notify", "outage_after_seconds", Kind.SECONDS, 600, minimum=0.0, comment="""
        An outage is announced only once it lasted this long (short flaps send nothing); its
        end is announced only when its start was.
    """),
    Option("notify", "retrying_after_seconds", Kind.SECONDS, 6 * 3600, minimum=1.0),
    Option("notify", "digest_time", Kind.TEXT, "", comment="""
        "HH:MM" (the lab's time zone): a daily digest of the last day's deliveries and
        failures. "" = none.
    """),
    Option("notify", "storm_limit", Kind.COUNT, 10, minimum=1, comment="""
        More than storm_limit messages to one recipient within storm_window_seconds are sent as
        one digest instead.
    """),
    Option("notify", "storm_window_seconds", Kind.SECONDS, 900, minimum=1.0),
)  # fmt: skip
