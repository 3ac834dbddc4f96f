"""Test regexes the way XNAT does: java.util.regex through tests/RegexCheck.java.

    from regexcheck import java_find, requires_java

    @requires_java
    def test_something():
        assert java_find([("^loc", "Localizer"), ("a{", "a")]) == [
            "match", "error: Illegal repetition"
        ]

Every pair goes through one JVM: `Pattern.compile(pattern, CASE_INSENSITIVE)`, then
`matcher(value).find()`, as RegExBasedSeriesImportFilter does.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

JAVA = shutil.which("java")
JAVAC = shutil.which("javac")
CHECKER = Path(__file__).with_name("RegexCheck.java")

requires_java = pytest.mark.skipif(
    JAVA is None, reason="no java on this machine: the java.util.regex check cannot run here"
)

# Small heap, quick start: the work is a few hundred tiny matches.
_JVM_OPTIONS = ["-Xshare:auto", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xmx64m"]
_command: list[str] | None = None


def _java_command() -> list[str]:
    """The command that runs RegexCheck; compiled once per process when javac is there."""
    global _command  # noqa: PLW0603 - compiled once, kept for the whole test session
    if _command is not None:
        return _command
    if JAVA is None:
        pytest.skip("no java on this machine: the java.util.regex check cannot run here")
    if JAVAC is None:  # source-file mode: compiles on every run, about a second each
        _command = [JAVA, *_JVM_OPTIONS, str(CHECKER)]
        return _command
    classes = tempfile.mkdtemp(prefix="regexcheck-")
    atexit.register(shutil.rmtree, classes, ignore_errors=True)
    subprocess.run([JAVAC, "-nowarn", "-d", classes, str(CHECKER)], check=True, capture_output=True)
    _command = [JAVA, *_JVM_OPTIONS, "-cp", classes, "RegexCheck"]
    return _command


def escaped(text: str) -> str:
    """`text` as one ASCII field of RegexCheck's input (see its header for the escapes)."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch in "\t\n\r":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r"}[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        else:  # UTF-16 code units, as Java holds them (lone surrogates pass as they are)
            units = ch.encode("utf-16-be", "surrogatepass")
            out.extend(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
    return "".join(out)


def java_find(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Java's answer for each (pattern, value): "match", "nomatch" or "error: <why>"."""
    lines = "".join(f"{escaped(pattern)}\t{escaped(value)}\n" for pattern, value in pairs)
    proc = subprocess.run(
        _java_command(), input=lines.encode("ascii"), capture_output=True, check=False, timeout=60
    )
    if proc.returncode != 0:
        raise AssertionError(f"RegexCheck failed: {proc.stderr.decode('utf-8', 'replace')}")
    answers = proc.stdout.decode("utf-8").splitlines()
    assert len(answers) == len(pairs), answers[-3:]
    return answers
