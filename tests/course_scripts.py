"""The course's scripts (scripts/*.py) as modules, for the tests: ``load("grade")``. scripts/ is put on
the path first, as running a script does, so that grade.py finds sandbox.py beside it."""
import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load(name: str, *, as_name: str | None = None):
    """scripts/<name>.py, executed as the module ``as_name`` (default ``name``) and registered in sys.modules."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(as_name or name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[as_name or name] = module
    spec.loader.exec_module(module)
    return module
