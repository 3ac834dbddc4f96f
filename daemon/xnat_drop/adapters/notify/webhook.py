"""A webhook (urllib): one JSON POST per message, TLS verified, no redirect followed (a
redirect would carry the message, and maybe the URL's secret, somewhere else).

Each POST carries an `Idempotency-Key` header from its outbox key: the same message sent
again after a crash carries the same one. Errors name the host only: the URL is a secret.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from xnat_drop import __version__
from xnat_drop.adapters.notify import ChannelError
from xnat_drop.core.shown import shown

TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str = field(repr=False)
    timeout: float = TIMEOUT

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc.rpartition("@")[2]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the 3xx is then raised as an HTTPError


def post(hook: Webhook, body: bytes, idempotency_key: str) -> None:
    """POST `body` (JSON); returns when the receiver answered 2xx. Raises ChannelError."""
    if urlsplit(hook.url).scheme not in ("https", "http"):
        raise ChannelError(f"the webhook at {hook.host} has no http(s) URL", permanent=True)
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        hook.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"xnat-drop/{__version__}",
            "Idempotency-Key": idempotency_key,
        },
    )
    opener = urllib.request.build_opener(
        _NoRedirect(), urllib.request.HTTPSHandler(context=ssl.create_default_context())
    )
    try:
        with opener.open(request, timeout=hook.timeout) as answer:
            answer.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise ChannelError(f"the webhook at {hook.host} answered HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            words = f"its TLS certificate is not trusted ({reason.verify_message})"
        elif isinstance(reason, OSError):
            words = reason.strerror or type(reason).__name__
        else:
            words = shown(str(reason))[:200]
        raise ChannelError(f"cannot reach the webhook at {hook.host}: {words}") from None
    except (OSError, http.client.HTTPException) as exc:
        words = getattr(exc, "strerror", None) or type(exc).__name__
        raise ChannelError(f"the webhook at {hook.host} failed: {words}") from None
