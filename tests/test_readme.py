"""The README names the tests that hold labkit's promises: each named test exists."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_the_readme_names_exists():
    named = set(re.findall(r"`(test_\w+)::(test_\w+)`", (ROOT / "README.md").read_text(encoding="utf-8")))
    assert len(named) >= 20
    missing = []
    for module, test in sorted(named):
        path = ROOT / "tests" / f"{module}.py"
        tree = ast.parse(path.read_text(encoding="utf-8")) if path.exists() else ast.Module(body=[])
        if test not in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}:
            missing.append(f"{module}::{test}")
    assert not missing, missing
