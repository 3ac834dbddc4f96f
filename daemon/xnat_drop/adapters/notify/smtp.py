"""E-mail through an SMTP server (smtplib): STARTTLS or SMTPS with the certificate verified
(the system's CA store, or notify.smtp_ca_bundle), or plain SMTP to a relay on this machine.

One connection per batch (`Session`); each message is one transaction, and a message counts
as sent when the server accepted its DATA. Every message has a stable Message-ID (from its
outbox key) so that a repeat after a crash can be recognised. Errors become ChannelError with
the server's answer, never the password.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from types import TracebackType

from xnat_drop import __version__
from xnat_drop.adapters.notify import ChannelError
from xnat_drop.core.seenoptions import SmtpSecurity
from xnat_drop.core.shown import shown

TIMEOUT = 30.0  # seconds per SMTP command: a hung server delays only the sender thread
# Where distributions keep the system's CA bundle, when Python's OpenSSL does not say.
SYSTEM_CA_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


@dataclass(frozen=True, slots=True)
class MailServer:
    host: str
    port: int
    security: SmtpSecurity
    sender: str  # the From: address
    ca_bundle: Path | None = None
    user: str = ""
    password: str = field(default="", repr=False)
    timeout: float = TIMEOUT

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def default_sender() -> str:
    """xnat-drop@ this machine's name (notify.email_from ""); no DNS asked (it may hang)."""
    return f"xnat-drop@{socket.gethostname() or 'localhost'}"


def compose(
    server: MailServer, to: str, subject: str, body: str, message_id: str, at: float
) -> EmailMessage:
    """A plain-text message; marked auto-generated so that no vacation reply comes back."""
    msg = EmailMessage()
    msg["From"] = server.sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(at, localtime=True)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Mailer"] = f"xnat-drop {__version__}"
    msg.set_content(body)
    return msg


class Session:
    """One connection to the mail server: `with Session(server) as s: s.send(msg)`."""

    def __init__(self, server: MailServer) -> None:
        self.server = server
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> Session:
        server = self.server
        try:
            if server.security == "ssl":
                self._smtp = smtplib.SMTP_SSL(
                    server.host, server.port, timeout=server.timeout, context=_context(server)
                )
            else:
                self._smtp = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
                if server.security == "starttls":
                    self._smtp.ehlo()
                    self._smtp.starttls(context=_context(server))
                    self._smtp.ehlo()
            if server.user:
                self._smtp.login(server.user, server.password)
        except BaseException as exc:
            self._close()
            if isinstance(exc, Exception):
                raise _error(server, exc) from None  # the traceback would show no secret,
            raise  # but neither does it help: the words say it
        return self

    def send(self, msg: EmailMessage) -> None:
        """Hand one message over; returns once the server accepted it for every recipient.
        Raises ChannelError (permanent when the server refused the recipient or the message
        with a 5xx)."""
        assert self._smtp is not None, "used inside `with`"
        try:
            refused = self._smtp.send_message(msg)
        except Exception as exc:
            raise _error(self.server, exc) from None
        if refused:  # some recipients only: one recipient per message here, so never
            raise ChannelError(f"{self.server.where} refused {', '.join(refused)}", permanent=True)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._smtp is not None and exc is None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()  # every message was accepted already
        self._close()

    def _close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError):
                self._smtp.close()
            self._smtp = None


def _context(server: MailServer) -> ssl.SSLContext:
    """Certificates verified, host names checked: the configured CA, else the system's."""
    if server.ca_bundle is not None:
        return ssl.create_default_context(cafile=str(server.ca_bundle))
    context = ssl.create_default_context()
    if not context.cert_store_stats().get("x509_ca"):
        for candidate in SYSTEM_CA_FILES:
            if os.path.isfile(candidate):
                context.load_verify_locations(cafile=candidate)
                break
    return context


def _error(server: MailServer, exc: Exception) -> ChannelError:
    """Why the server did not take it, in words (its answer, never our password)."""
    where = server.where
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        answers = "; ".join(
            f"{to}: {code} {_text(msg)}" for to, (code, msg) in exc.recipients.items()
        )
        return ChannelError(f"{where} refused {answers}", permanent=all(c >= 500 for c in codes))
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return ChannelError(
            f"{where} refused the login of {server.user!r}: {exc.smtp_code} "
            f"{_text(exc.smtp_error)} (check notify.smtp_user and the password credential)"
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return ChannelError(
            f"{where} does not offer {'STARTTLS' if 'TLS' in str(exc) else 'that'}: "
            f"{_text(str(exc))} (notify.smtp_security)"
        )
    if isinstance(exc, (smtplib.SMTPDataError, smtplib.SMTPSenderRefused)):
        return ChannelError(
            f"{where} refused the message: {exc.smtp_code} {_text(exc.smtp_error)}",
            permanent=isinstance(exc, smtplib.SMTPDataError) and exc.smtp_code >= 500,
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return ChannelError(f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ChannelError(
            f"the TLS certificate of {where} is not trusted ({exc.verify_message}); if it "
            "comes from an in-house CA, set notify.smtp_ca_bundle to that CA's PEM file"
        )
    if isinstance(exc, ssl.SSLError):
        return ChannelError(f"TLS problem with {where}: {_text(str(exc))}")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return ChannelError(f"{where} did not answer within {server.timeout:.0f} s")
    if isinstance(exc, OSError):
        return ChannelError(f"cannot reach {where}: {exc.strerror or _text(str(exc))}")
    return ChannelError(f"{where}: {_text(str(exc))}")


def _text(answer: bytes | str) -> str:
    text = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else answer
    return shown(" ".join(text.split()))[:300]
