"""The architecture as import-linter contracts (pyproject.toml): search/ and analysis/ never import each other,
what both need sits in core/ and stats/ below them, mtl/ knows no Ray."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _lint(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run([exe, "--no-cache", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_every_layer_contract_is_kept():
    out = _lint()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout


def test_a_search_module_importing_analysis_breaks_the_contract(tmp_path):
    """The contract can fail: a copy of the tree where search/ imports analysis/ is refused, naming the import."""
    for pkg in ("app", "search", "analysis", "core", "stats", "mtl"):
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "search" / "leak.py").write_text("from analysis.tables import compact_table  # noqa\n")
    out = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, '.'); "
                          "from importlinter.cli import lint_imports_command; lint_imports_command()", "--no-cache"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "search.leak -> analysis.tables" in out.stdout
