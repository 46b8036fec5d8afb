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
