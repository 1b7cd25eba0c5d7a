"""The README names the tests that hold labkit's promises: each named test exists; its benchmark figures are the stored runs'."""
import ast
import json
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


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end, text.index(start))]


def test_the_readmes_benchmark_figures_are_those_of_the_stored_runs():
    """The Performance section quotes the stored benchmark outputs: every figure of its table is in
    benchmarks/results/cpu-2cores.txt, and the int8 paragraph's rounded ratios match the two
    stored int8 runs (so a re-run benchmark that changes them fails until the README follows)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    results = ROOT / "benchmarks" / "results"
    train = (results / "cpu-2cores.txt").read_text(encoding="utf-8")
    table = _section(readme, "| what | measured | goal |", "Read ratios")
    rows = re.findall(r"(\d+) / (\d+) img/s = \*\*([\d.]+)x\*\*", table)
    assert len(rows) == 5
    for a, b, ratio in rows:
        assert re.search(rf"\b{b} img/s\b.*\b{a} img/s\b.*ratio {ratio}x|\b{b} img/s\b.*\b{a} img/s \({ratio}x", train), (a, b, ratio)
    [share] = re.findall(r"\*\*([\d.]+) %\*\*", table)
    assert f"= {share}% of labkit's epoch" in train

    def ratios(name, pattern):
        return [float(x) for x in re.findall(pattern, (results / name).read_text(encoding="utf-8"))]
    int8 = _section(readme, "`benchmarks/bench_int8.py` times", "No GPU was")
    assert "about 4x faster than PyTorch fp32 at batch 256" in int8 and "(about 2x" in int8 and "(about 1.5x" in int8
    vnni_256 = ratios("int8-cpu-2cores-avx512vnni.txt", r"at least 3x faster than torch fp32 at batch 256: ([\d.]+)x")
    vnni_own = ratios("int8-cpu-2cores-avx512vnni.txt", r"engine's own fp32 at batch 256: ([\d.]+)x")
    avx2_256 = ratios("int8-cpu-2cores-avx2.txt", r"at least 3x faster than torch fp32 at batch 256: ([\d.]+)x")
    avx2_own = ratios("int8-cpu-2cores-avx2.txt", r"engine's own fp32 at batch 256: ([\d.]+)x")
    assert len(vnni_256) == len(vnni_own) == len(avx2_256) == len(avx2_own) == 2        # 1 and 2 threads
    assert all(3.75 <= r < 4.25 for r in vnni_256) and all(1.75 <= r < 2.25 for r in vnni_own)
    assert all(r < 3 for r in avx2_256) and all(1.25 <= r < 1.75 for r in avx2_own)   # "short of 3x"


def test_the_readmes_grading_benchmark_figures_are_those_of_the_stored_run():
    """The grading benchmark's seconds in the README are the stored run's (benchmarks/results/grade-cpu-2cores.txt)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stored = (ROOT / "benchmarks" / "results" / "grade-cpu-2cores.txt").read_text(encoding="utf-8")
    text = _section(readme, "`benchmarks/bench_grade.py` grades", "importing torch and labkit")
    sandboxed, trusted = re.search(r"(\d+) s in sandboxes, (\d+) s for the same grading without them", text).groups()
    inside = float(re.search(r"each in its own sandbox in ([\d.]+) s", stored).group(1))
    outside = float(re.search(r"without a sandbox in ([\d.]+) s", stored).group(1))
    assert (int(sandboxed), int(trusted)) == (round(inside), round(outside))
    assert inside < 600                                    # the goal the README states


def test_the_readmes_run_times_are_those_of_the_stored_reference_runs():
    """The minutes (and number format) the README gives for each lab's reference run are the ones its
    labs/results/<lab>.json holds: a new reference run fails this until the README follows."""
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    said = re.search(r"took ([\d.]+) minutes for Lab 1, (.*?), on 2-thread", readme)
    assert said, "the README no longer gives the reference runs' times"
    times = {"lab1": (said.group(1), None)}
    for minutes, lab, fmt in re.findall(r"([\d.]+) for Lab (\d) \((\w+)\)", said.group(2)):
        times[f"lab{lab}"] = (minutes, fmt)
    stored = sorted(p.stem for p in (ROOT / "labs" / "results").glob("lab*.json"))
    assert sorted(times) == stored
    for lab, (minutes, fmt) in times.items():
        run = json.loads((ROOT / "labs" / "results" / f"{lab}.json").read_text())["run"]
        assert float(minutes) == run["minutes"], lab
        if fmt is not None:
            assert run["precision"].startswith(fmt) or (fmt == "bf16" and "bf16" in run["precision"]), lab
