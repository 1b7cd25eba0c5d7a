"""The reference run: re-execute every lab notebook in place and store its outputs.

    python scripts/run_notebooks.py                 # every notebook in labs/, full profile
    python scripts/run_notebooks.py labs/lab2_pruning.ipynb
    python scripts/run_notebooks.py --profile ci    # a quick rehearsal, written to a temporary folder

The data come from ``$LABKIT_DATA`` (or are downloaded; see README). Progress bars are
stored as text. Prints how long each notebook took.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


def run(path: Path, timeout: int | None, out: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, out)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: labs/*.ipynb")
    parser.add_argument("--profile", default="full", choices=["full", "ci"])
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: none)")
    parser.add_argument("--in-place", action="store_true",
                        help="with --profile ci: store the rehearsal's outputs in the notebooks (their header "
                             "then says profile 'ci'), e.g. until a full reference run replaces them")
    args = parser.parse_args()
    paths = args.notebooks or sorted((REPO / "labs").glob("*.ipynb"))
    os.environ["LABKIT_PROFILE"] = args.profile
    os.environ.setdefault("LABKIT_PROGRESS", "text")
    # Only the full profile's outputs belong in the notebooks; a CI rehearsal goes elsewhere.
    out_dir = None if args.profile == "full" or args.in_place else Path(tempfile.mkdtemp(prefix="labkit-ci-"))
    total = 0.0
    for path in paths:
        out = path if out_dir is None else out_dir / path.name
        print(f"{path}: running ({args.profile} profile) ...", flush=True)
        seconds = run(path, args.timeout, out)
        total += seconds
        print(f"{path}: {seconds / 60:.1f} min ({seconds:.0f} s) -> {out}", flush=True)
    print(f"all {len(paths)} notebooks: {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
