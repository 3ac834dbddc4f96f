"""Who is calling: the authentication gate in front of every resource (HTTP Basic, the
``JSESSIONID`` cookie, alias tokens, answered as Spring security does) and XNAT's own sign-in
routes: ``/data/JSESSION``, ``/data/auth``, ``/data/services/auth``, ``/data/services/tokens``.
The users, sessions and tokens themselves are ``auth``'s."""

from __future__ import annotations

import re
from email.message import Message

from . import pages
from .auth import Auth, Outcome
from .call import Call, flag, read_form
from .pages import Reply

BROWSER_AGENTS = re.compile(r".*MSIE.*|.*Mozilla.*|.*AppleWebKit.*|.*Opera.*", re.DOTALL)
LOGIN_FAILED = "Login attempt failed. Please try again."
NEEDS_AUTH = "Full authentication is required to access this resource"


class AuthGate:
    """Signs each call in (``authenticate``) and serves the sign-in routes."""

    def __init__(self, auth: Auth, site_id: str) -> None:
        self.auth = auth
        self.site_id = site_id  # the Basic realm

    def authenticate(self, call: Call) -> Reply | None:
        cookie = _cookie(call.headers, "JSESSIONID")
        result = self.auth.authenticate(call.headers.get("Authorization"), cookie)
        if result.outcome is Outcome.MALFORMED:
            return pages.servlet_error_page(500, "Invalid basic authentication token")
        if result.outcome is Outcome.FAILED:
            return pages.servlet_error_page(401, LOGIN_FAILED)
        if result.outcome is Outcome.ANONYMOUS:
            if BROWSER_AGENTS.fullmatch(call.user_agent):
                host = call.headers.get("Host", "localhost")
                location = f"http://{host}/app/template/Login.vm"
                return Reply(302, b"", "text/html;charset=UTF-8", (("Location", location),))
            reply = pages.servlet_error_page(401, NEEDS_AUTH)
            challenge = ("WWW-Authenticate", f'Basic realm="{self.site_id}"')
            return Reply(reply.status, reply.body, reply.content_type, (challenge,))
        call.user = result.user
        call.session_id = result.session_id
        if result.new_session and result.session_id:
            call.response_headers.append(("Set-Cookie", _session_cookie(result.session_id)))
        return None

    def services_auth(self, call: Call) -> Reply:
        if call.method not in ("PUT", "POST"):
            return pages.status_page(405)
        form = read_form(call)
        username = form.get("username") or form.get("j_username") or ""
        password = form.get("password") or form.get("j_password") or ""
        result = self.auth.login(username, password)
        if result.outcome is not Outcome.OK or not result.session_id:
            return pages.status_page(401, "Authentication failed.")
        call.user = result.user
        call.response_headers.append(("Set-Cookie", _session_cookie(result.session_id)))
        return pages.text(200, result.session_id)

    def logged_in(self, call: Call) -> Reply:
        """``GET /data/auth``: who is signed in (and the CSRF token when asked)."""
        if call.method != "GET":
            return pages.status_page(405)
        csrf = (
            f"; XNAT_CSRF={self.auth.csrf_token(call.session_id or '')}"
            if flag(call.query.get("CSRF"))
            else ""
        )
        return pages.text(200, f"User '{call.user}' is logged in{csrf}")

    def jsession(self, call: Call) -> Reply:
        session_id = call.session_id or ""
        if call.method == "DELETE":
            self.auth.invalidate_session(call.session_id)
            call.response_headers.clear()
            return pages.text(200, "")
        if call.method not in ("GET", "POST"):
            return pages.status_page(405)
        if not any(name == "Set-Cookie" for name, _ in call.response_headers):
            call.response_headers.append(("Set-Cookie", _session_cookie(session_id)))
        body = session_id
        if flag(call.query.get("CSRF")):
            body += f"; XNAT_CSRF={self.auth.csrf_token(session_id)}"
        return pages.text(200, body)

    def tokens(self, call: Call, rest: list[str]) -> Reply:
        user = call.user or ""
        if rest[:1] == ["issue"]:
            target = user
            if rest[1:2] == ["user"] and len(rest) == 3:
                target = rest[2]
                if not self.auth.has_user(target):
                    return pages.status_page(404, f"Couldn't find user {target}")
            elif len(rest) != 1:
                return pages.status_page(404)
            return pages.json_reply(self.auth.issue_token(target).as_json())
        if rest[:1] == ["validate"] and len(rest) == 3:
            return pages.json_reply({"valid": self.auth.validate_token(rest[1], rest[2])})
        if rest[:1] == ["invalidate"] and len(rest) in (2, 3):
            if not self.auth.invalidate_token(rest[1]):
                return pages.status_page(404, f"Can't find an alias token with the alias {rest[1]}")
            return pages.json_reply({"result": "OK"})
        if rest == ["show"]:
            return pages.json_reply([token.as_json() for token in self.auth.tokens_of(user)])
        return pages.status_page(404)


def _session_cookie(session_id: str) -> str:
    return f"JSESSIONID={session_id}; Path=/; HttpOnly"


def _cookie(headers: Message, name: str) -> str | None:
    for header in headers.get_all("Cookie") or []:
        for part in str(header).split(";"):
            key, _, value = part.strip().partition("=")
            if key == name and value:
                return value
    return None
