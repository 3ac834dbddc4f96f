"""Run a one-file Java checker from tests/ (ZipCheck.java, RegexCheck.java): compiled once per
test process with javac when it is there (else Java's source-file mode, about a second a run),
skipped when there is no java."""

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
_commands: dict[Path, list[str]] = {}


def java_command(checker: Path, jvm_options: Sequence[str], what: str) -> list[str]:
    """The command that runs `checker` (its class is its file's stem); skips the calling test
    when there is no java, saying that `what` cannot be checked here."""
    found = _commands.get(checker)
    if found is not None:
        return found
    if JAVA is None:
        pytest.skip(f"no java on this machine: {what} cannot run here")
    if JAVAC is None:
        command = [JAVA, *jvm_options, str(checker)]
    else:
        classes = tempfile.mkdtemp(prefix=f"{checker.stem.lower()}-")
        atexit.register(shutil.rmtree, classes, ignore_errors=True)
        subprocess.run(
            [JAVAC, "-nowarn", "-d", classes, str(checker)], check=True, capture_output=True
        )
        command = [JAVA, *jvm_options, "-cp", classes, checker.stem]
    _commands[checker] = command
    return command
