"""The package layout of the design card: root folders install as ``winnow.<folder>``, and
dependencies between them point one way."""

from __future__ import annotations

import ast
import re
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
    "search_space": {"kernels"},  # the quantization, norms and optimizers run its kernels
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
# The engine modules the dashboard may read through: stored results' readout, Pareto arithmetic,
# parameter importance.
UI_ENGINE_MODULES = {"readout", "pareto", "importance"}


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


# --- benchmarks, file paths and cycles --------------------------------------------------------

BENCH_DOOR = ROOT / "service" / "cli" / "bench.py"  # the one module that may import winnow.bench


def test_only_the_cli_bench_commands_import_bench():
    for folder in [*CODE_FOLDERS, "winnow"]:
        for path in (ROOT / folder).rglob("*.py"):
            if folder == "bench" or path == BENCH_DOOR:
                continue
            used = {n for n in qualified_imports(path.read_text()) if n.startswith("winnow.bench")}
            assert not used, f"{path.relative_to(ROOT)} imports {sorted(used)}"


def path_references(source: str) -> set[str]:
    """Code folders a module reaches by a path relative to its own file (``Path(__file__)...
    / "ui" / "app.py"``): such a path is an import that the import rules cannot see."""
    tree = ast.parse(source)
    if not any(isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(tree)):
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.update(p for p in node.value.split("/") if p in CODE_FOLDERS)
    return names


def test_a_file_path_into_another_folder_counts_as_an_import():
    source = 'from pathlib import Path\nAPP = Path(__file__).parents[1] / "ui" / "app.py"\n'
    assert path_references(source) == {"ui"}
    assert path_references('NAME = "ui"\n') == set()  # no __file__: a plain string
    for folder, allowed in ALLOWED.items():
        for path in (ROOT / folder).rglob("*.py"):
            used = path_references(path.read_text()) - {folder}
            assert used <= allowed, f"{path.relative_to(ROOT)} reaches {sorted(used)} by path"


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = ["winnow"] + ([] if folder == "winnow" else [folder]) + rest
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(source: str, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that a module imports at run time: at module level and inside
    functions (a lazy import still closes a cycle), not under ``if TYPE_CHECKING:``.
    ``from package import module`` imports the module (the package is its parent, loading
    already), ``from module import name`` the module."""
    tree = ast.parse(source)
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names & modules


def import_graph() -> dict[str, set[str]]:
    paths = {
        module_name(path): path
        for folder in [*CODE_FOLDERS, "winnow"]
        for path in (ROOT / folder).rglob("*.py")
        if "v1" not in path.parts
    }
    return {
        name: runtime_imports(path.read_text(), set(paths)) - {name} for name, path in paths.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (one per back edge)."""
    found, state = [], {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_cycles_are_found_and_there_are_none():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    lazy = "def f():\n    from m.b import x\nif TYPE_CHECKING:\n    from m.c import y\n"
    assert runtime_imports(lazy, {"m.b", "m.c"}) == {"m.b"}
    assert cycles(import_graph()) == []


MODULE_NAME = re.compile(r"^winnow\.(\w+)(\.\w+)*$")
# `winnow ui` hands the dashboard's script to Streamlit, which takes a file: the CLI finds it by
# module name (importlib.util.find_spec), the one reference from service to ui.
NAMED_ON_PURPOSE = {Path("service/cli/ui.py"): {"ui"}}


def module_references(source: str) -> set[str]:
    """Code folders a module names as a module string (``find_spec("winnow.ui.app")``,
    ``import_module(...)``): an import the import statements do not show."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = MODULE_NAME.match(node.value)
            if match and match.group(1) in CODE_FOLDERS:
                names.add(match.group(1))
    return names


def test_a_module_named_in_a_string_counts_as_an_import():
    assert module_references('spec = find_spec("winnow.ui.app")\nlog = "winnow.server"\n') == {"ui"}
    for folder, allowed in ALLOWED.items():
        for path in (ROOT / folder).rglob("*.py"):
            exempt = NAMED_ON_PURPOSE.get(path.relative_to(ROOT), set())
            used = module_references(path.read_text()) - {folder} - exempt
            assert used <= allowed, f"{path.relative_to(ROOT)} names {sorted(used)}"
