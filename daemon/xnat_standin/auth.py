"""Users, HTTP sessions, alias tokens and account lockout (xnat-api.md §2).

Mirrors Spring's ``XnatBasicAuthenticationFilter``: Basic credentials are checked on every
request unless the request's session already belongs to that user; a success creates an HTTP
session (``JSESSIONID``); a failure is a 401 and counts towards locking the account.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import string
import threading
import time
import uuid
from dataclasses import dataclass
from enum import Enum

_ALIAS_FORMAT = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_SECRET_ALPHABET = string.ascii_letters + string.digits
MAX_SESSIONS_PER_USER = 1000  # pref concurrentMaxSessions; the oldest session is expired


class Outcome(str, Enum):
    OK = "ok"
    ANONYMOUS = "anonymous"  # no usable credentials: 401 with a challenge, or 302 for browsers
    FAILED = "failed"  # wrong credentials or locked account: 401
    MALFORMED = "malformed"  # an Authorization header that cannot be decoded: 500


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: Outcome
    user: str | None = None
    session_id: str | None = None
    new_session: bool = False  # the response must set the JSESSIONID cookie


@dataclass
class HttpSession:
    id: str
    user: str
    csrf: str
    created: float
    last_used: float


@dataclass
class AliasToken:
    """XNAT's ``AliasToken`` entity; ``as_json`` is what ``/services/tokens/issue`` returns."""

    id: int
    alias: str
    secret: str
    user: str
    created_ms: int
    expires_ms: int
    enabled: bool = True

    def as_json(self) -> dict[str, object]:
        return {
            "alias": self.alias,
            "secret": self.secret,
            "xdatUserId": self.user,
            "singleUse": False,
            "estimatedExpirationTime": self.expires_ms,
            "validIPAddresses": [],
            "id": self.id,
            "enabled": self.enabled,
            "created": self.created_ms,
            "timestamp": self.created_ms,
            "disabled": 0,
        }


class Auth:
    """All authentication state, guarded by the emulator lock."""

    def __init__(
        self,
        users: dict[str, str],
        lock: threading.RLock,
        *,
        session_timeout: float,
        max_failed_logins: int,
        token_lifetime: float,
    ) -> None:
        self._users = dict(users)
        self._lock = lock
        self.session_timeout = session_timeout
        self.max_failed_logins = max_failed_logins
        self.token_lifetime = token_lifetime
        self._sessions: dict[str, HttpSession] = {}
        self._failures: dict[str, int] = {}
        self._tokens: dict[str, AliasToken] = {}
        self._next_token_id = 1

    # -- users --------------------------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        with self._lock:
            self._users[name] = password

    def has_user(self, name: str) -> bool:
        with self._lock:
            return name in self._users

    def is_locked(self, name: str) -> bool:
        with self._lock:
            return self._failures.get(name, 0) >= self.max_failed_logins

    def unlock(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)

    # -- requests -----------------------------------------------------------------------

    def authenticate(self, authorization: str | None, session_id: str | None) -> AuthResult:
        """Decide who a request is from, given its Authorization header and JSESSIONID."""
        with self._lock:
            session = self._live_session(session_id)
            if authorization is not None and authorization[:6].lower() == "basic ":
                try:
                    decoded = base64.b64decode(authorization[6:].strip(), validate=True)
                    username, _, password = decoded.decode("utf-8").partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    return AuthResult(Outcome.MALFORMED)
                username = username.split("/", 1)[-1]  # "providerId/username"
                if username.strip():
                    if session is not None and session.user == self._owner(username):
                        return AuthResult(Outcome.OK, session.user, session.id)
                    return self.login(username, password)
            if session is not None:
                return AuthResult(Outcome.OK, session.user, session.id)
            return AuthResult(Outcome.ANONYMOUS)

    def login(self, username: str, password: str) -> AuthResult:
        """Check a user name (or alias) and password; a success opens a new HTTP session."""
        with self._lock:
            user = self._check(username, password)
            if user is None:
                return AuthResult(Outcome.FAILED)
            session = self._open_session(user)
            return AuthResult(Outcome.OK, user, session.id, new_session=True)

    def _owner(self, username: str) -> str | None:
        token = self._tokens.get(username)
        return token.user if token is not None else username

    def _check(self, username: str, password: str) -> str | None:
        if _ALIAS_FORMAT.fullmatch(username):
            token = self._tokens.get(username)
            if token is None or not token.enabled or token.secret != password:
                return None
            if token.expires_ms <= _epoch_ms() or self.is_locked(token.user):
                return None
            return token.user
        if username not in self._users or self.is_locked(username):
            return None
        if not secrets.compare_digest(self._users[username], password):
            self._failures[username] = self._failures.get(username, 0) + 1
            return None
        self._failures.pop(username, None)
        return username

    def _open_session(self, user: str) -> HttpSession:
        now = time.monotonic()
        mine = sorted(
            (session for session in self._sessions.values() if session.user == user),
            key=lambda session: session.created,
        )
        for oldest in mine[: max(0, len(mine) - MAX_SESSIONS_PER_USER + 1)]:
            del self._sessions[oldest.id]
        session = HttpSession(uuid.uuid4().hex.upper(), user, str(uuid.uuid4()), now, now)
        self._sessions[session.id] = session
        return session

    def _live_session(self, session_id: str | None) -> HttpSession | None:
        if session_id is None:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_used >= self.session_timeout:
            del self._sessions[session_id]
            return None
        session.last_used = now
        return session

    def csrf_token(self, session_id: str) -> str:
        with self._lock:
            session = self._sessions.get(session_id)
            return session.csrf if session is not None else ""

    def invalidate_session(self, session_id: str | None) -> None:
        with self._lock:
            if session_id is not None:
                self._sessions.pop(session_id, None)

    def expire_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()

    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    # -- alias tokens -------------------------------------------------------------------

    def issue_token(self, user: str) -> AliasToken:
        with self._lock:
            created = _epoch_ms()
            token = AliasToken(
                id=self._next_token_id,
                alias=str(uuid.uuid4()),
                secret="".join(secrets.choice(_SECRET_ALPHABET) for _ in range(64)),
                user=user,
                created_ms=created,
                expires_ms=created + int(self.token_lifetime * 1000),
            )
            self._next_token_id += 1
            self._tokens[token.alias] = token
            return token

    def token(self, alias: str) -> AliasToken | None:
        with self._lock:
            return self._tokens.get(alias)

    def tokens_of(self, user: str) -> list[AliasToken]:
        with self._lock:
            return [token for token in self._tokens.values() if token.user == user]

    def validate_token(self, alias: str, secret: str) -> str | None:
        with self._lock:
            token = self._tokens.get(alias)
            if token is None or token.secret != secret or not token.enabled:
                return None
            return token.user if token.expires_ms > _epoch_ms() else None

    def invalidate_token(self, alias: str) -> bool:
        with self._lock:
            return self._tokens.pop(alias, None) is not None


def _epoch_ms() -> int:
    return int(time.time() * 1000)
