"""`xnat-drop check-config [--offline]`: the configuration, the folders as `run` would find
them, the credentials, and one login to XNAT; exit 0, or 78 with every problem listed
(systemd runs it, offline, before every start).

What XNAT says decides the exit code: refused credentials, a web page instead of XNAT (a
proxy or single sign-on, a wrong xnat.url) and a refused TLS certificate are configuration
errors (78). An XNAT that does not answer is only a warning (0): the daemon waits out
outages by itself, and an administrator configuring while XNAT is down must not be blocked.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import closing
from pathlib import Path

from xnat_drop.adapters import configfile
from xnat_drop.adapters.fs import startup
from xnat_drop.adapters.ledger import FILE_NAME as LEDGER_FILE
from xnat_drop.adapters.notify import secrets as notify_secrets
from xnat_drop.adapters.xnat.client import XnatClient, connect
from xnat_drop.core.config import Config
from xnat_drop.core.cstore import CStoreConfig
from xnat_drop.core.errors import (
    ConfigError,
    XnatAuthError,
    XnatRejectedError,
    XnatServerError,
    XnatTlsError,
    XnatTransientError,
    XnatUnexpectedAnswerError,
)
from xnat_drop.core.text import duration, iso
from xnat_drop.service import transportcheck
from xnat_drop.service.availability import RENEW, TOKEN_WARNING
from xnat_drop.service.judge import check_keywords
from xnat_drop.service.notify import describe


def check_config(config_path: Path, *, offline: bool = False) -> int:
    """Print what will be used and return 0; raise ConfigError listing every problem."""
    env = dict(os.environ)
    cfg = configfile.load(config_path, env)
    check_keywords(cfg)
    # Root is not the service user: it cannot tell whose the service's folders should be,
    # nor test the service user's permissions (systemd-run can: README, step 5).
    as_root = os.geteuid() == 0
    problems = startup.problems(cfg.paths, LEDGER_FILE, any_owner=as_root)
    problems += transportcheck.problems(cfg, try_link=False)  # the inbox, C-STORE
    client: XnatClient | None = None
    try:
        client = connect(cfg.xnat, env)
    except ConfigError as exc:
        problems.extend(exc.problems)
    notify: notify_secrets.Secrets | None = None
    try:
        notify = notify_secrets.load(cfg.notify, env)  # the channels' secrets: never printed
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems or client is None or notify is None:
        raise ConfigError(problems, str(config_path))
    with closing(client):
        xnat = "not contacted (--offline)" if offline else _contact(client, cfg, config_path)
        if cfg.inbox is not None and not offline and not xnat.startswith("NOT CHECKED"):
            _auto_archive_warnings(client, cfg.inbox.root)
        receiver = ""
        if cfg.cstore is not None:
            receiver = "not contacted" if offline else _receiver(client, cfg.cstore)
    print(f"{config_path}: OK")
    print(f"  XNAT      {cfg.xnat.url} as {client.user} (secret from {client.secret_source})")
    print(f"            {xnat}")
    print(f"  incoming  {cfg.paths.incoming}  layout {'/'.join(cfg.routing.layout)}")
    print(f"  done      {cfg.paths.done}")
    print(f"  failed    {cfg.paths.failed}")
    print(f"  state     {cfg.paths.state}")
    print(f"  watching  {cfg.watch.observer}, settle {cfg.watch.settle:g} s")
    if cfg.inbox is not None:
        where = f"{cfg.inbox.root} = {cfg.inbox.server_path} on XNAT"
        print(f"  inbox     {where}, {cfg.inbox.link} (proven by XNAT at each project's first use)")
    if cfg.cstore is not None:
        c = cfg.cstore
        print(f"  cstore    {c.called_ae} at {c.host}:{c.port} as {c.calling_ae}; {receiver}")
    _monitoring(cfg)
    for i, line in enumerate(describe(cfg.notify, notify)):
        print(f"  {'notify' if i == 0 else '':8}  {line}")
    if as_root:
        print(
            "  note      checked as root: folder permissions were not tested as the service "
            "user; run it through systemd-run as the README shows to test those too"
        )
    return 0


def _contact(client: XnatClient, cfg: Config, config_path: Path) -> str:
    """One login, XNAT's version and the token's expiry, in words. Raises ConfigError when
    XNAT refuses us or is not XNAT; an XNAT that does not answer is a warning."""
    try:
        account = client.check()
    except XnatAuthError as exc:
        raise ConfigError([f"xnat: {exc}"], str(config_path)) from exc
    except (XnatTlsError, XnatUnexpectedAnswerError) as exc:
        raise ConfigError([f"xnat.url: {exc}"], str(config_path)) from exc
    except (XnatTransientError, XnatServerError) as exc:
        _warn(
            f"XNAT unreachable at {cfg.xnat.url} ({exc}); the credentials were not checked. "
            "The daemon starts anyway and waits for XNAT: run check-config again once XNAT is up"
        )
        return "NOT CHECKED: XNAT did not answer"
    words = f"logged in; XNAT {account.server_version or '(version unknown)'}"
    if account.token_expires is not None:
        left = account.token_expires - time.time()  # noqa: TID251 - the command's own "now"
        words += f"; alias token expires {iso(account.token_expires)} (in {duration(left)})"
        if left < TOKEN_WARNING:
            _warn(f"the XNAT alias token expires in {duration(max(0.0, left))}; renew it: {RENEW}")
    return words


def _receiver(client: XnatClient, config: CStoreConfig) -> str:
    """XNAT's DICOM receiver in words: listed and enabled, and answering C-ECHO; what is
    wrong is a warning (the daemon pauses delivery until it is fixed, never fails a session)."""
    from xnat_drop.service import cstore  # noqa: PLC0415 (the cstore extra, checked above)

    try:
        rows = client.dicom_receivers()
    except (XnatTransientError, XnatServerError, XnatRejectedError, XnatAuthError):
        rows = None
    for warning in cstore.routing_warnings(config, rows):
        _warn(warning)
    problem = cstore.receiver_problem(config, rows)
    if problem is not None:
        _warn(problem)
        return "NOT USABLE (see the warning)"
    try:
        cstore.echo(config)
    except XnatTransientError as exc:
        _warn(f"XNAT's DICOM receiver did not answer C-ECHO: {exc}")
        return "NOT CHECKED: no C-ECHO answer"
    return "C-ECHO answered"


def _monitoring(cfg: Config) -> None:
    """The status page and the metrics textfile, if on; a warning for a page beyond loopback."""
    page = cfg.page
    if page.enabled:
        host = f"[{page.host}]" if ":" in page.host else page.host
        print(f"  page      http://{host}:{page.port}/ (/status.json, /metrics, /healthz)")
        if not page.loopback:
            _warn(
                f"the status page listens on {host}:{page.port}, beyond this machine, and has "
                "no login: anyone who reaches it reads session folder names, projects and "
                'errors. Keep page.listen on loopback ("127.0.0.1:8870") and put a reverse '
                "proxy with authentication in front of it for other hosts"
            )
    textfile = cfg.metrics.textfile
    if textfile is not None:
        print(f"  metrics   {textfile} (node_exporter textfile)")
        if not os.access(textfile.parent, os.W_OK | os.X_OK):
            _warn(
                f"metrics.textfile: {textfile.parent} is not writable here, so the metrics "
                "file cannot be written (under systemd: ReadWritePaths= in the drop-in, and "
                "write permission for the service user)"
            )


def _auto_archive_warnings(client: XnatClient, root: Path) -> None:
    """Warn for each project folder of the inbox whose project archives automatically: the
    inbox import cannot keep its sessions in the prearchive (xnat-api-round2.md, point 2)."""
    try:
        projects = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return  # root_problems said why
    for project in projects:
        if client.archives_automatically(project):
            _warn(
                f"project {project} archives automatically: what the inbox imports for it is "
                "archived at once, before xnat-drop can verify it. xnat-drop verifies it in "
                "the archive afterwards and reports a mismatch there; to verify before "
                "archiving, set the project to keep sessions in the prearchive, or use "
                'xnat.transport = "import" for it'
            )


def _warn(message: str) -> None:
    print(f"xnat-drop: warning: {message}", file=sys.stderr)
