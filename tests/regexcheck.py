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

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from javarun import JAVA, java_command

CHECKER = Path(__file__).with_name("RegexCheck.java")

requires_java = pytest.mark.skipif(
    JAVA is None, reason="no java on this machine: the java.util.regex check cannot run here"
)

# Small heap, quick start: the work is a few hundred tiny matches.
_JVM_OPTIONS = ["-Xshare:auto", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xmx64m"]


def _java_command() -> list[str]:
    return java_command(CHECKER, _JVM_OPTIONS, "the java.util.regex check")


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
