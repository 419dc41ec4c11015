"""The package layout of the design card: root folders install as ``winnow.<folder>``, and
dependencies between them point one way."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = [
    "search_space",
    "kernels",
    "proxies",
    "supernet",
    "workers",
    "service",
    "ui",
    "bench",
]
# What each folder may import from winnow (docs/architecture.md, "Layout").
ALLOWED = {
    "search_space": set(),
    "kernels": set(),
    "proxies": {"search_space", "kernels"},
    "supernet": {"search_space", "kernels"},
    "workers": {"search_space", "proxies", "supernet", "kernels"},
    "service": set(CODE_FOLDERS) - {"ui", "service"} | {"v1"},  # v1: the generated gRPC code
    "ui": {"service", "v1"},
    "bench": set(CODE_FOLDERS) - {"bench"} | {"v1"},
}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_code_folder_and_subpackage_is_installed_under_winnow():
    setuptools = pyproject()["tool"]["setuptools"]
    mapping, packages = setuptools["package-dir"], set(setuptools["packages"])
    for folder in CODE_FOLDERS:
        assert mapping[f"winnow.{folder}"] == folder
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            assert ".".join(("winnow", folder, *relative)) in packages, init


def test_no_generic_top_level_modules_are_installed():
    probe = f"import importlib.util as u; print([n for n in {CODE_FOLDERS!r} if u.find_spec(n)])"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd="/", capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
    done = subprocess.run(
        [sys.executable, "-c", "import winnow.service.cli, winnow.ui"],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def winnow_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n.split(".")[1] for n in names if n.startswith("winnow.") and n.count(".") >= 1}


# winnow.records: the value types every folder shares (no torch, optuna or SQL)
SHARED = {"records"}


def test_dependencies_point_one_way():
    for folder, allowed in ALLOWED.items():
        allowed = allowed | SHARED
        for path in (ROOT / folder).rglob("*.py"):
            used = winnow_imports(path) - {folder}
            assert used <= allowed, f"{path.relative_to(ROOT)} imports {sorted(used - allowed)}"


def qualified_imports(source: str) -> set[str]:
    """Every module or name a file imports, in full: ``from a.b import c`` gives ``a.b`` and
    ``a.b.c`` (``c`` may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


TABLES = "winnow.service.store.tables"
# The engine modules the dashboard may read through: stored results' readout, Pareto arithmetic.
UI_ENGINE_MODULES = {"readout", "pareto"}


def ui_violations(source: str) -> list[str]:
    """What a dashboard module may not import: SQL (it reads through ``service.store.reads``
    and the store's record API), the tables, and the engine beyond ``UI_ENGINE_MODULES``."""

    def forbidden(name: str) -> bool:
        parts = name.split(".")
        if parts[0] in ("sqlalchemy", "sqlmodel") or name.startswith(TABLES):
            return True
        return name.startswith("winnow.service.engine.") and parts[3] not in UI_ENGINE_MODULES

    return [name for name in qualified_imports(source) if forbidden(name)]


def test_the_rules_catch_what_they_name():
    source = (
        "from winnow.service.store import tables\nfrom sqlalchemy import select\n"
        "from winnow.service.engine import Engine, readout\nimport winnow.service.engine.state\n"
    )
    assert sorted(ui_violations(source)) == [
        "sqlalchemy",
        "sqlalchemy.select",
        "winnow.service.engine.Engine",
        "winnow.service.engine.state",
        TABLES,
    ]


def test_ui_reads_through_the_store_api_and_readout_only():
    for path in (ROOT / "ui").rglob("*.py"):
        bad = ui_violations(path.read_text())
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_tables_stay_inside_the_store():
    """ORM rows never leave ``service/store``: everyone else gets records."""
    store = ROOT / "service" / "store"
    for folder in [*CODE_FOLDERS, "winnow"]:
        for path in (ROOT / folder).rglob("*.py"):
            if path.is_relative_to(store):
                continue
            used = {n for n in qualified_imports(path.read_text()) if n.startswith(TABLES)}
            assert not used, f"{path.relative_to(ROOT)} imports {sorted(used)}"


# What the client SDK and the CLI's start-up must not load (each costs seconds to import).
HEAVY = ("torch", "optuna", "ray", "sqlalchemy", "streamlit")


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_the_client_sdk_imports_and_reads_a_spec_file_without_torch(tmp_path):
    (tmp_path / "space.yaml").write_text((ROOT / "examples/digits.yaml").read_text())
    spec = "space: space.yaml\ntask: {dataset: digits}\nstrategy: {screen: {proxies: [naswot]}}\n"
    (tmp_path / "search.yaml").write_text(spec)
    done = python(
        "import sys, winnow\n"
        "from winnow import Client, SearchSpec\n"
        "from winnow.service.client import _as_spec, _inline\n"
        f"spec = _inline(_as_spec({str(tmp_path / 'search.yaml')!r}))\n"
        "assert spec.space['name'] == 'digits-joint', spec.space\n"  # the file, sent inline
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_cli_parser_loads_no_heavy_dependency():
    done = python(
        "import sys\n"
        "from winnow.service.cli.main import build_parser\n"
        "build_parser()\n"
        f"print([m for m in {HEAVY + ('grpc',)!r} if m in sys.modules])"
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    import winnow

    assert winnow.__version__ == version("winnow") == pyproject()["project"]["version"]
    done = subprocess.run(
        [sys.executable, "-m", "winnow.service.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == f"winnow {version('winnow')}"
