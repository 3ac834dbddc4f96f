"""Exception types, chosen by what the service loop must do when one is raised.

Rule violations are never exceptions: they are data in a `Verdict`.
"""

from __future__ import annotations

from xnat_drop.core.model import Policy, Remedy, Rule, Violation
from xnat_drop.core.text import plural


class XnatDropError(Exception):
    """Base class for every error this package raises on purpose."""


class ConfigError(XnatDropError):
    """The configuration is unusable. The process exits 78 (EX_CONFIG).

    `problems` holds every problem found, each starting with its key path.
    """

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = tuple(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{plural(len(problems), 'problem')}{where}:\n{lines}")


class SessionChangedError(XnatDropError):
    """Files vanished or changed while the session was being read: wait for it to settle again."""


class XnatError(XnatDropError):
    """Base for errors from talking to XNAT."""


class XnatTransientError(XnatError):
    """Connection error, timeout, 429, 502, 503 or 504: keep the session and retry later."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class XnatTlsError(XnatTransientError):
    """XNAT's TLS certificate or handshake was refused. Waited out like an outage by the
    daemon (a certificate renewal may be under way); a configuration error to check-config."""


class InboxUnusableError(XnatTransientError):
    """XNAT's inbox cannot be used as configured (its path check failed, a hard link would
    cross filesystems): delivery pauses like an outage, with this sentence in the status and
    the log; the sessions wait in the work folder, never in failed/."""


class ReceiverRefusedError(XnatTransientError):
    """XNAT's DICOM receiver rejects xnat-drop's association for its AE titles (the calling
    AE is not on its whitelist, or no receiver has the called AE): delivery pauses like an
    outage, with this sentence in the status and the log, until a C-ECHO is accepted; the
    sessions wait in the work folder, never in failed/."""


class XnatServerError(XnatError):
    """A 500 that is not a known refusal: an outage, or this session's fault. The loop probes
    XNAT to tell which: outage (wait) or an attempt spent on this session."""

    def __init__(self, text: str, *, message: str = "") -> None:
        self.message = message or text
        super().__init__(text)


class XnatAuthError(XnatError):
    """XNAT refused our credentials or our access (401/403): pause all uploads, never fail data."""


class XnatRejectedError(XnatError):
    """XNAT refused this session for good (other 4xx, empty import answer, wrong project).

    It carries the violation the session goes to failed/ with: by default the rule and the
    message, which repeats XNAT's own words (and `remedy`, when the report's "What to do"
    must differ from the rule's usual one); `violation` gives a complete one instead.
    """

    def __init__(
        self,
        rule: Rule,
        message: str,
        *,
        status: int | None = None,
        violation: Violation | None = None,
        remedy: Remedy | None = None,
    ) -> None:
        self.status = status
        if violation is None:
            sentence = message
            if rule == "xnat-rejected":
                sentence += (
                    " Check the files named in XNAT's message, fix them, then drop the session"
                    " again."
                )
            violation = Violation(rule, Policy.REJECT, "XNAT", sentence, remedy=remedy)
        self.violation = violation
        super().__init__(message)

    @property
    def rule(self) -> Rule:
        return self.violation.rule


class XnatUnexpectedAnswerError(XnatTransientError):
    """XNAT's address answered with something that is not XNAT's: a web page (a proxy or a
    single sign-on login), a redirect, an empty body or the wrong shape where data is due.

    A problem of the server or its configuration, never of the session: like any outage, the
    queue pauses and resumes by itself once XNAT answers properly again.
    """


class StorageError(XnatDropError):
    """The state directory (the ledger, the status file) cannot be read or written: full,
    read-only or damaged. Nothing is lost: the daemon pauses all work, says so loudly, and
    resumes once a probe write succeeds. At start it is a configuration error (exit 78)."""
