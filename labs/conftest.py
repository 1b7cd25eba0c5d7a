"""nbval for the lab notebooks: outputs of the cells tagged ``nbval-check-output`` (cell metadata,
nbval's own tag) are compared with the stored ones, which come from the reference run on the
course's offline CIFAR-10 subset; every other cell is executed, its output not compared.

The full dataset (downloaded on a fresh machine) gives the same data with ``LABKIT_SUBSET=course``,
which reads the subset out of it (recognised by its pixels and labels). With other data a notebook
that loads CIFAR-10 prints other accuracies, so its cells are still executed (an error fails) but
their outputs are not compared; the header of the test run says which case applies. Under another
edition of the course's values (``LABKIT_COURSE=2024``) every cell is executed and nothing compared.
"""
import functools
from pathlib import Path

from labkit import course
from labkit.data import is_reference_subset
from labkit.download import data_dir


@functools.lru_cache(maxsize=None)
def _uses_cifar(path: Path) -> bool:
    """Does the notebook load CIFAR-10 (so that its numbers depend on the data)?"""
    return "cifar10(" in path.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _course_data() -> bool:
    """Does data.cifar10() give the course's subset here (read once per test run)?"""
    return is_reference_subset()


def _other_edition() -> str | None:
    """The edition of the course's values in use when it is not the one the stored outputs ran with."""
    name = course.current().name
    return None if name == "course" else name


def pytest_report_header(config):
    if _other_edition():
        return (f"notebooks: edition {_other_edition()!r} of the course's values (LABKIT_COURSE): every cell is "
                f"executed, outputs are not compared (the stored ones are the course edition's)")
    if _course_data():
        return "notebooks: checked outputs compared (the offline CIFAR-10 subset is in use)"
    return (f"notebooks: {data_dir()} does not give the CIFAR-10 subset of the stored runs, so the notebooks "
            f"that load CIFAR-10 are executed but their outputs are not compared (with the full dataset, "
            f"set LABKIT_SUBSET=course to compare them)")


def pytest_collection_modifyitems(config, items):
    if _course_data() and not _other_edition():
        return
    for item in items:
        options = getattr(item, "options", None)          # nbval's cell items carry their options
        if isinstance(options, dict) and (_other_edition() or _uses_cifar(Path(item.fspath))):
            options["check"] = False
