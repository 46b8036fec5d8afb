"""The import contracts in pyproject.toml ([tool.importlinter]) hold, the check can fail, and
``import mimetic`` stays light (no torch)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is in the dev extra")

ROOT = Path(__file__).resolve().parents[1]
_LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """Run ``lint-imports`` on the package under ``root/src`` with ``root/pyproject.toml``."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([sys.executable, "-c", _LINT, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_contract_check_fails_on_an_upward_import(tmp_path):
    shutil.copytree(ROOT / "src" / "mimetic", tmp_path / "src" / "mimetic", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    readers = tmp_path / "src" / "mimetic" / "text" / "readers.py"
    readers.write_text(readers.read_text() + "\n\ndef _upward():\n    from mimetic.evaluation.evaluate import headline  # a reader reaching up into evaluation\n\n    return headline\n")
    proc = lint_imports(tmp_path)
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout and "mimetic.text.readers -> mimetic.evaluation.evaluate" in proc.stdout


def test_import_mimetic_does_not_import_torch():
    code = "import sys, mimetic; print(sorted(m for m in ('torch', 'transformers', 'peft', 'llama_cpp') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.strip() == "[]"


def _modules() -> list[tuple[str, Path]]:
    src = ROOT / "src" / "mimetic"
    out = []
    for f in sorted(src.rglob("*.py")):
        parts = f.relative_to(src.parent).with_suffix("").parts
        out.append((".".join(p for p in parts if p != "__init__"), f))
    return out


def private_imports(modules: list[tuple[str, Path]]) -> list[str]:
    """``from mimetic.x import _name`` where ``mimetic.x`` is another module (a private name crossing modules)."""
    import ast

    found = []
    for name, path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mimetic") and node.module != name:
                found += [f"{name}:{node.lineno} imports {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def long_functions(modules: list[tuple[str, Path]], packages: tuple[str, ...], limit: int = 120) -> dict[str, int]:
    """Functions over ``limit`` lines (``def`` to last line) in the modules of ``packages``."""
    import ast

    found = {}
    for name, path in modules:
        if not name.startswith(packages):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit:
                found[f"{name}.{node.name}"] = node.end_lineno - node.lineno + 1
    return found


def test_no_private_name_crosses_modules():
    assert private_imports(_modules()) == []


def test_private_name_check_can_fail(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from mimetic.voice.generate import _hidden\n")
    assert private_imports([("mimetic.frontends.x", f)]) == ["mimetic.frontends.x:1 imports mimetic.voice.generate._hidden"]


def test_no_long_functions_in_training_evaluation_and_the_desk():
    """Each exception is listed, with its reason, in docs/architecture.md."""
    packages = ("mimetic.training", "mimetic.evaluation", "mimetic.frontends.app")
    long = long_functions(_modules(), packages)
    listed = (ROOT / "docs" / "architecture.md").read_text()
    assert [f for f in long if f"`{f}`" not in listed] == [], long
