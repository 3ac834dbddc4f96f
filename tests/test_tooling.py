"""The tooling's own promises: import-linter's contracts (pyproject.toml) hold, say what the
README says about who may import what, cover every module, and catch a broken rule; and
scripts/pythons agrees with requires-python."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
DAEMON = ROOT / "daemon"

# Each outside library and the adapter that may import it (http: the page's server and the
# webhook's client errors, so two).
ADAPTERS: dict[str, str | tuple[str, ...]] = {
    "pydicom": "xnat_drop.adapters.dicom",
    "pynetdicom": "xnat_drop.adapters.dicom.cstore",
    "requests": "xnat_drop.adapters.xnat",
    "urllib3": "xnat_drop.adapters.xnat",
    "watchdog": "xnat_drop.adapters.watcher",
    "systemd": "xnat_drop.adapters.systemd_api",
    "sqlite3": "xnat_drop.adapters.ledger",
    "prometheus_client": "xnat_drop.adapters.prometheus",
    "http": ("xnat_drop.adapters.page", "xnat_drop.adapters.notify"),
}
NOT_IN_CORE = {
    "pydicom", "requests", "watchdog", "systemd", "sqlite3", "tomllib", "tomli",
    "multiprocessing", "prometheus_client", "http", "xnat_standin",
}  # fmt: skip


def _config() -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    return config


def _contracts(kind: str) -> list[dict[str, Any]]:
    return [c for c in _config()["contracts"] if c["type"] == kind]


def _modules(package: str) -> set[str]:
    """Every module of `package` as found on disk (a package is named by its __init__)."""
    found = set()
    for path in (DAEMON / package).rglob("*.py"):
        parts = path.relative_to(DAEMON).with_suffix("").parts
        found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def _expression(expression: str) -> re.Pattern[str]:
    """import-linter's module expression (`*` one part, `**` any number) as a regex."""
    parts = [
        "[^.]+" if part == "*" else ".+" if part == "**" else re.escape(part)
        for part in expression.split(".")
    ]
    return re.compile(r"\.".join(parts))


def _covers(contract: dict[str, Any], module: str) -> bool:
    """Whether `module` is one of the contract's sources (or, as packages, inside one)."""
    as_packages = contract.get("as_packages", True)
    parts = module.split(".")
    names = [".".join(parts[:i]) for i in range(1, len(parts) + 1)] if as_packages else [module]
    return any(
        _expression(source).fullmatch(name)
        for source in contract["source_modules"]
        for name in names
    )


def _forbidding(target: str) -> list[dict[str, Any]]:
    return [c for c in _contracts("forbidden") if target in c["forbidden_modules"]]


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _lint_imports() -> str | None:
    beside = Path(sys.executable).with_name("lint-imports")  # this virtual environment's
    return str(beside) if beside.exists() else shutil.which("lint-imports")


def _run_lint_imports(*args: str, cwd: Path = ROOT, pythonpath: Path | None = None) -> str:
    """lint-imports' output; fails the test when it exits other than 0 or 1 (a contract broken)."""
    exe = _lint_imports()
    if exe is None:
        pytest.skip("import-linter is not installed here: pip install -e '.[test]' brings it")
    env = None
    if pythonpath is not None:
        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    result = subprocess.run(
        [exe, "--no-logo", "--no-cache", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode in (0, 1), output
    return f"exit {result.returncode}\n{output}"


def test_every_import_contract_is_kept() -> None:
    output = _run_lint_imports()
    assert output.startswith("exit 0"), output


def test_the_contracts_name_the_five_kinds_of_rule() -> None:
    config = _config()
    assert config["include_external_packages"] is True
    assert {"xnat_drop", "xnat_standin"} <= set(config["root_packages"])

    # 1. The roles, top to bottom.
    assert any(
        c.get("containers") == ["xnat_drop"]
        and c["layers"] == ["commands", "service", "adapters", "core"]
        for c in _contracts("layers")
    ), "a layers contract: xnat_drop.commands > service > adapters > core"

    # 2. The core imports no outside library (directly or through another module).
    assert any(
        "xnat_drop.core" in c["source_modules"]
        and set(c["forbidden_modules"]) >= NOT_IN_CORE
        and not c.get("allow_indirect_imports", False)
        for c in _contracts("forbidden")
    ), f"a forbidden contract: xnat_drop.core imports none of {sorted(NOT_IN_CORE)}"

    # 3. Each outside library is imported by its own adapter only (others may use the adapter).
    for library in ADAPTERS:
        assert _forbidding(library), f"a forbidden contract for {library}"

    # 4. The product never imports the stand-in, not even indirectly.
    assert any(
        c["source_modules"] == ["xnat_drop"] and not c.get("allow_indirect_imports", False)
        for c in _forbidding("xnat_standin")
    ), "a forbidden contract: xnat_drop does not import xnat_standin"

    # 5. The stand-in proper never imports the product (the demo, which runs it, may).
    assert _forbidding("xnat_drop"), "a forbidden contract: xnat_standin does not import xnat_drop"


@pytest.mark.parametrize("library", sorted(ADAPTERS))
def test_every_other_module_is_a_source_of_the_library_contracts(library: str) -> None:
    """A module added later must be listed too: the contracts name packages and modules one by
    one (import-linter cannot say "all but the adapter"), so this catches one left out."""
    adapters = _adapters(library)
    contracts = _forbidding(library)
    modules = _modules("xnat_drop")
    assert set(adapters) <= modules, f"{adapters} are not in daemon/"

    def inside(module: str) -> bool:
        return any(_inside(module, adapter) for adapter in adapters)

    left_out = {m for m in modules if not inside(m) and not any(_covers(c, m) for c in contracts)}
    assert not left_out, f"not a source of the {library} contracts: {sorted(left_out)}"
    itself = {m for m in modules if inside(m) and any(_covers(c, m) for c in contracts)}
    assert not itself, f"the {library} adapter itself may not import {library}: {sorted(itself)}"


@pytest.mark.parametrize(
    "library",
    sorted(set(ADAPTERS) - {"urllib3"}),  # urllib3 comes with requests
)
def test_each_adapter_imports_its_library_where_import_linter_sees_it(library: str) -> None:
    """Otherwise its contract would hold whatever the other modules did."""
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter")
    graph = grimp.build_graph("xnat_drop", include_external_packages=True, cache_dir=None)
    importers = graph.find_modules_that_directly_import(library) if library in graph.modules else ()
    for adapter in _adapters(library):
        assert any(_inside(m, adapter) for m in importers), (adapter, sorted(importers))


def _adapters(library: str) -> tuple[str, ...]:
    found = ADAPTERS[library]
    return (found,) if isinstance(found, str) else found


def test_every_stand_in_module_but_the_demo_is_a_source_of_its_contracts() -> None:
    contracts = _forbidding("xnat_drop")
    modules = _modules("xnat_standin")
    demo = "xnat_standin.demo"
    left_out = {
        m for m in modules if not _inside(m, demo) and not any(_covers(c, m) for c in contracts)
    }
    assert not left_out, f"not a source of the xnat_standin -> xnat_drop contracts: {left_out}"
    assert not {m for m in modules if _inside(m, demo) and any(_covers(c, m) for c in contracts)}


def _first_module(package: str, but: str) -> str:
    """A plain module of `package` outside `but`, as a path below daemon/."""
    for module in sorted(_modules(package)):
        path = DAEMON / (module.replace(".", "/") + ".py")
        if path.is_file() and not _inside(module, but) and not module.endswith("__main__"):
            return str(path.relative_to(DAEMON))
    raise AssertionError(f"no plain module in {package}")


BREAKS = [
    ("xnat_drop/core/__init__.py", "import xnat_drop.service", "layers"),
    ("xnat_drop/core/__init__.py", "import socket", "core-pure"),
    ("xnat_drop/service/__init__.py", "import pydicom", "pydicom-adapter"),
    ("xnat_drop/adapters/fs/__init__.py", "import requests", "requests-adapter"),
    ("xnat_drop/commands/__init__.py", "import sqlite3", "sqlite3-adapter"),
    ("xnat_drop/service/__init__.py", "import prometheus_client", "prometheus-adapter"),
    ("xnat_drop/adapters/ledger/__init__.py", "import http.server", "http-server-adapter"),
    ("xnat_drop/service/__init__.py", "import xnat_standin", "product-without-standin"),
    ("xnat_standin/__init__.py", "import xnat_drop", "standin-root-without-product"),
    ("<a stand-in module>", "import xnat_drop.core", "standin-without-product"),
]


@pytest.mark.parametrize(("file", "line", "contract"), BREAKS, ids=[b[2] for b in BREAKS])
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, file: str, line: str, contract: str
) -> None:
    """The same contracts on a copy of the code with one import added: lint-imports must fail."""
    if file.startswith("<"):
        file = _first_module("xnat_standin", but="xnat_standin.demo")
    shutil.copytree(DAEMON, tmp_path / "daemon", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PYPROJECT, tmp_path)
    with (tmp_path / "daemon" / file).open("a") as source:
        source.write(f"\n{line}\n")
    output = _run_lint_imports("--contract", contract, cwd=tmp_path, pythonpath=tmp_path / "daemon")
    assert output.startswith("exit 1") and "BROKEN" in output, output


def test_the_oldest_tested_python_is_the_oldest_supported() -> None:
    requires = tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"]
    pythons = (ROOT / "scripts" / "pythons").read_text()
    tested = re.search(r"^SUPPORTED_PYTHONS=\(([^)]*)\)", pythons, re.MULTILINE)
    assert tested is not None
    assert requires == f">={tested.group(1).split()[0]}"
