"""The tree's imports point one way: `benchmarks` -> `dfflow.sandbox` -> the `dfflow` library, and
`controller` (the agent) -> `dfflow`. The sandbox starts controllers as processes, never imports them."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module each file of `package` imports, at any depth (lazy imports in functions too)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """File -> the modules it imports from under any of `forbidden` (packages or subpackages)."""
    def banned(name: str) -> bool:
        return any(name == f or name.startswith(f + ".") for f in forbidden)
    found = {path: sorted(filter(banned, names)) for path, names in imported_modules(package).items()}
    return {path: names for path, names in found.items() if names}


def test_nothing_in_the_dfflow_library_or_its_sandbox_imports_the_agent_or_the_benchmarks():
    assert offenders("dfflow", ("controller", "benchmarks")) == {}


def test_the_agent_does_not_import_the_sandbox_or_the_benchmarks():
    assert offenders("controller", ("dfflow.sandbox", "benchmarks")) == {}


def test_the_check_sees_a_lazy_import_inside_a_function(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "m.py").write_text("def f():\n    from controller.daemon import main\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert offenders("pkg", ("controller",)) == {"pkg/m.py": ["controller.daemon"]}
