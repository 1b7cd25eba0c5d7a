"""labkit.latency: the interleaved harness, latency measurements that are sane (no timed
assertions), speed-ups, cross-overs, the table and the figure."""
import math
import os

import pytest
import torch
from torch import nn

from labkit import latency, models, settings, structured


def test_measure_is_sane():
    torch.manual_seed(0)
    net = models.resnet20().train()
    small = structured.prune_channels(net, 0.5)
    results = latency.measure({("dense", 0.0): net, ("channels", 0.5): small}, batch_sizes=(1, 2),
                            threads=(1,), rounds=2, min_run_time=0.01, progress=False)
    assert set(results) == {(k, b, 1) for k in [("dense", 0.0), ("channels", 0.5)] for b in (1, 2)}
    for (key, b, t), lat in results.items():
        assert lat.batch_size == b and lat.threads == 1 and lat.device == "cpu"
        assert 0 < lat.median < 60 and math.isfinite(lat.median)
        q1, q3 = lat.quartiles
        assert 0 < q1 <= lat.median <= q3 and lat.iqr == pytest.approx(q3 - q1)
        assert len(lat.times) >= 2                       # at least one block per round
    assert net.training and small.training               # modes restored
    text = latency.latency_table(results, baseline=("dense", 0.0))
    assert "speed-up" in text and "channels 50%" in text
    fig = latency.plot_latency(results, baseline=("dense", 0.0))
    assert len(fig.axes) == 2                                # one panel per batch size and thread count
    assert [line.get_label() for line in fig.axes[0].lines][0] == "dense"   # the baseline's line


def test_thread_settings():
    assert latency.thread_settings("cpu")[0] == 1
    assert latency.thread_settings("cpu")[-1] == torch.get_num_threads()
    assert latency.thread_settings("cuda") == (None,)


@pytest.mark.parametrize("kw, match", [(dict(rounds=0), "rounds"), (dict(batch_sizes=(0,)), "batch_sizes"),
                                       (dict(threads=(0,)), "threads"),
                                       (dict(min_run_time=float("nan")), "min_run_time")])
def test_measure_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        latency.measure({"m": nn.Linear(3, 3)}, **kw, progress=False)
    with pytest.raises(ValueError, match="non-empty"):
        latency.measure({})


def test_plot_latency_needs_kind_sparsity_keys():
    lat = latency.measure({"plain": nn.Linear(3, 3)}, batch_sizes=(1,), threads=(1,), rounds=1,
                        min_run_time=0.001, image_shape=(3,), progress=False)
    with pytest.raises(ValueError, match="kind, sparsity"):
        latency.plot_latency(lat)


def _fake(times_by_key) -> dict:
    """Results of `measure` with given per-call times (seconds), batch 1, one thread."""
    from torch.utils.benchmark.utils.common import Measurement, TaskSpec

    out = {}
    for key, times in times_by_key.items():
        m = Measurement(1, list(times), TaskSpec("run()", "pass", num_threads=1))
        out[(key, 1, 1)] = latency.Latency(key, 1, 1, "cpu", m)
    return out


def test_speedup_and_its_range():
    res = _fake({"base": [4.0, 5.0, 6.0, 7.0, 8.0], "fast": [1.0, 2.0, 2.0, 2.0, 3.0]})
    s = latency.speedup(res, "fast", "base", 1, 1)
    assert s.median == pytest.approx(6.0 / 2.0)
    assert s.low == pytest.approx(5.0 / 2.0) and s.high == pytest.approx(7.0 / 2.0)   # q1/q3, q3/q1
    with pytest.raises(ValueError, match="no measurement"):
        latency.speedup(res, "fast", "base", 256, 1)


@pytest.mark.parametrize("model, faster, words", [
    ([1.0, 2.0, 2.0, 2.0, 3.0], True, "fast is faster than base: 3.00x, at least 2.50x"),
    ([9.0, 10.0, 10.0, 11.0, 12.0], False, "fast is slower than base: 0.60x, at most 0.70x"),
    ([4.0, 5.5, 6.0, 6.5, 8.0], None, "are not told apart by this run: 1.00x, but the quartiles allow 0.77x to 1.27x"),
])
def test_speedup_says_faster_only_when_the_interquartile_ranges_do_not_overlap(model, faster, words):
    res = _fake({"base": [4.0, 5.0, 6.0, 7.0, 8.0], "fast": model})   # base quartiles 5 and 7
    s = latency.speedup(res, "fast", "base", 1, 1)
    assert s.faster is faster
    assert words in s.sentence("fast", "base")
    # the case: 0.91x with quartiles 0.88-0.96x is slower beyond the spread, not "on it"
    assert latency.Speedup(0.91, 0.88, 0.96).faster is False
    assert latency.Speedup(1.05, 0.95, 1.2).faster is None and latency.Speedup(0.95, 0.8, 1.05).faster is None


def test_crossover_beyond_the_spread():
    base = [0.9, 1.0, 1.0, 1.0, 1.1]                                    # quartiles 1.0 and 1.0
    res = _fake({("dense", 0.0): base, ("CSR", 0.9): [0.8, 0.9, 0.95, 1.05, 1.1],   # median below, q3 above
                 ("CSR", 0.95): [0.5, 0.6, 0.6, 0.6, 0.7]})
    assert latency.crossover(res, "CSR", ("dense", 0.0)) == {(1, 1): 0.9}        # by medians
    assert latency.crossover(res, "CSR", ("dense", 0.0), beyond_spread=True) == {(1, 1): 0.95}


def test_crossover():
    base = [1.0] * 3
    res = _fake({("dense", 0.0): base, ("CSR", 0.5): [3.0] * 3, ("CSR", 0.8): [0.9] * 3,
                 ("CSR", 0.9): [1.1] * 3, ("CSR", 0.95): [0.5] * 3})
    assert latency.crossover(res, "CSR", ("dense", 0.0)) == {(1, 1): 0.95}   # 0.9 is slower again
    res[(("CSR", 0.95), 1, 1)] = _fake({("CSR", 0.95): [2.0] * 3})[(("CSR", 0.95), 1, 1)]
    assert latency.crossover(res, "CSR", ("dense", 0.0)) == {(1, 1): None}


def test_machine_load_counts_the_cpus_other_processes_keep_busy_now():
    import os

    cpus = os.cpu_count()

    def samples(*texts):
        texts = iter(texts)
        return lambda: next(texts)

    def clock(*readings):               # (this process's CPU seconds, wall seconds) per reading
        readings = iter(readings)
        return lambda: next(readings)

    idle_self = clock((5.0, 100.0), (5.0, 101.0))
    every_tick_busy = samples("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3",
                              f"cpu  {100 + 150 * cpus} 0 {100 + 50 * cpus} 800 0 0 0 0 0 0")
    line = latency.machine_load(0.01, _read=every_tick_busy, _clock=idle_self)
    assert line == f"other processes kept {cpus:.1f} of {cpus} CPUs busy over 0.01 s (busy: other processes compete for the CPUs)"
    iowait_only = samples("cpu  100 0 100 800 5 0 0 0 0 0", f"cpu  100 0 100 {800 + 100 * cpus} {5 + 100 * cpus} 0 0 0 0 0")
    line = latency.machine_load(0.01, _read=iowait_only, _clock=clock((5.0, 100.0), (5.0, 101.0)))
    assert line.startswith(f"other processes kept 0.0 of {cpus} CPUs")          # waiting for I/O is idle
    one_cpu_busy = samples("cpu  100 0 100 800 0 0 0 0 0 0",                    # busy = 1/cpus of all ticks
                           f"cpu  {100 + 50 * cpus} 0 {100 + 50 * cpus} {800 + 100 * cpus * (cpus - 1)} 0 0 0 0 0 0")
    mine = latency.machine_load(0.01, _read=one_cpu_busy, _clock=clock((5.0, 100.0), (6.0, 101.0)))
    assert mine.startswith(f"other processes kept 0.0 of {cpus}")             # that CPU was this process's own
    theirs = latency.machine_load(0.01, _read=samples("cpu  100 0 100 800 0 0 0 0 0 0",
                                                      f"cpu  {100 + 50 * cpus} 0 {100 + 50 * cpus} {800 + 100 * cpus * (cpus - 1)} 0 0 0 0 0 0"),
                                  _clock=clock((5.0, 100.0), (5.0, 101.0)))
    assert theirs.startswith(f"other processes kept 1.0 of {cpus}") and "(busy" in theirs

    def missing():
        raise FileNotFoundError("/proc/stat")
    line = latency.machine_load(0.01, _read=missing)                 # macOS: the load average
    if hasattr(os, "getloadavg"):
        assert line.startswith("load average") and f"on {cpus} CPUs" in line
    if os.path.exists("/proc/stat"):
        line = latency.machine_load(0.1)
        assert line.startswith("other processes kept") and f"of {cpus} CPUs busy over 0.1 s" in line
    with pytest.raises(ValueError, match="seconds"):
        latency.machine_load(0)


def test_interleaved_visits_every_candidate_once_per_round_in_shuffled_orders():
    calls, clock = [], iter(range(1, 10_000))

    def candidate(name):
        def run():
            calls.append(name)
            return float(next(clock))      # the seconds it "measured"
        return run

    names = ["a", "b", "c", "d"]
    times = latency.interleaved({n: candidate(n) for n in names}, rounds=30, seed=1, warmup=2)
    assert calls[:8] == [n for n in names for _ in range(2)]        # warm-up calls first, not recorded
    rounds = [calls[8 + 4 * r: 12 + 4 * r] for r in range(30)]
    assert all(sorted(r) == names for r in rounds)                 # each candidate once per round
    assert len({tuple(r) for r in rounds}) > 5                     # in fresh orders
    assert {r[0] for r in rounds} == set(names)                    # no candidate always first
    assert list(times) == names and all(len(t) == 30 for t in times.values())
    for n in names:                                                # each its own returned seconds
        assert times[n] == [float(9 + 4 * r + rounds[r].index(n)) for r in range(30)]
    calls.clear()
    again = latency.interleaved({n: candidate(n) for n in names}, rounds=30, seed=1, warmup=2)
    assert [calls[8 + 4 * r: 12 + 4 * r] for r in range(30)] == rounds   # the seed fixes the orders
    assert set(again) == set(names)


def test_interleaved_bad_input():
    with pytest.raises(ValueError, match="rounds"):
        latency.interleaved({"a": lambda: 1.0}, 0)
    with pytest.raises(ValueError, match="non-empty dict"):
        latency.interleaved({}, 3)
    with pytest.raises(ValueError, match="non-empty dict"):
        latency.interleaved({"a": 1.0}, 3)
    with pytest.raises(ValueError, match="seconds candidate 'a'"):
        latency.interleaved({"a": lambda: None}, 1)               # must return its seconds
    with pytest.raises(ValueError, match="seconds candidate 'a'"):
        latency.interleaved({"a": lambda: float("nan")}, 1)


def test_measure_reads_the_progress_setting_once(monkeypatch):
    calls = []
    monkeypatch.setattr(settings, "progress", lambda: calls.append(1) or "off")
    net = nn.Linear(3, 3)
    latency.measure({"a": net, "b": nn.Linear(3, 3)}, batch_sizes=(1, 2), threads=(1,), rounds=2,
                    min_run_time=0.001, image_shape=(3,))
    assert calls == [1]                                            # once per call, not per setting
    latency.measure({"a": net}, batch_sizes=(1,), threads=(1,), rounds=1, min_run_time=0.001,
                    image_shape=(3,), progress=True)
    assert calls == [1, 1]                                         # True: the setting's mode too
    latency.measure({"a": net}, batch_sizes=(1,), threads=(1,), rounds=1, min_run_time=0.001,
                    image_shape=(3,), progress="text")
    latency.measure({"a": net}, batch_sizes=(1,), threads=(1,), rounds=1, min_run_time=0.001,
                    image_shape=(3,), progress=False)
    assert calls == [1, 1]                                         # an explicit mode reads nothing
    with pytest.raises(ValueError, match="progress mode"):
        latency.measure({"a": net}, batch_sizes=(1,), threads=(1,), rounds=1, min_run_time=0.001,
                        image_shape=(3,), progress="loud")


def test_measure_restores_modes_when_a_model_fails():
    class Broken(nn.Linear):
        def forward(self, x):
            raise RuntimeError("boom")

    good, bad = nn.Linear(3, 3).train(), Broken(3, 3).train()
    with pytest.raises(RuntimeError, match="boom"):
        latency.measure({"good": good, "bad": bad}, batch_sizes=(1,), threads=(1,), rounds=1,
                        min_run_time=0.001, image_shape=(3,), progress=False)
    assert good.training and bad.training


def test_plot_models_draws_one_bar_per_model_with_its_speed_up():
    lat = latency.measure({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3)}, batch_sizes=(1, 2), threads=(1,), rounds=1,
                          min_run_time=0.001, image_shape=(3,), progress=False)
    fig = latency.plot_models(lat, baseline="a")
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"] and len(ax.patches) == 2
    assert ax.texts[0].get_text().strip() == "1.00x"
    assert ax.patches[1].get_width() == pytest.approx(lat[("b", 1, 1)].median * 1e3)
    with pytest.raises(ValueError):
        latency.plot_models({})


# --- the quiet-machine rule (issue 28) ------------------------------------------------------------

def _tiny():
    return {"a": torch.nn.Linear(4, 2), "b": torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU())}


def _measure(busy_answers, **kw):
    answers = iter(busy_answers)
    calls = []

    def busy():
        calls.append(1)
        return next(answers)
    out = latency.measure(_tiny(), batch_sizes=(1,), threads=(1,), rounds=1, min_run_time=0.005,
                          image_shape=(4,), progress=False, pause=0.01, _busy=busy, **kw)
    return out, len(calls)


def test_a_quiet_machine_is_timed_once_and_judged():
    out, calls = _measure([False, False])
    assert calls == 2 and all(lat.quiet is True for lat in out.values())
    s = latency.speedup(out, "b", "a", 1, 1)
    assert s.quiet is True and "not judged" not in s.sentence("b", "a")


def test_a_busy_machine_waits_and_measures_again_when_it_quiets():
    out, calls = _measure([True, False, False])          # busy before: wait; then quiet before and after
    assert calls == 3 and all(lat.quiet is True for lat in out.values())
    out, calls = _measure([False, True, False, False])   # busy after the first timing: time it all again
    assert calls == 4 and all(lat.quiet is True for lat in out.values())


def test_a_machine_that_stays_busy_is_not_judged():
    out, calls = _measure([True] * 10, attempts=2)
    assert calls == 3                                    # wait once, then time, then the check after
    assert all(lat.quiet is False for lat in out.values())
    s = latency.speedup(out, "b", "a", 1, 1)
    assert s.faster is None and str(s) == "not judged: the machine was busy while timing"
    assert s.sentence("b", "a").startswith("b against a: not judged: the machine was busy")
    assert latency.crossover({(("CSR", 0.9), 1, 1): out[("b", 1, 1)], ("a", 1, 1): out[("a", 1, 1)]}, "CSR", "a") == {(1, 1): None}


def test_an_unknown_load_is_judged_and_says_nothing_of_quiet():
    out, _ = _measure([None, None])
    assert all(lat.quiet is None for lat in out.values())
    assert latency.speedup(out, "b", "a", 1, 1).quiet is None


def test_machine_busy_reads_the_same_sample_as_machine_load():
    stats = iter(["cpu 0 0 0 100 0 0 0 0\n", "cpu 150 0 0 150 0 0 0 0\n"])   # 150 of 200 ticks busy
    clock = iter([(0.0, 0.0), (0.0, 0.5)])
    busy = latency.machine_busy(0.01, _read=lambda: next(stats), _clock=lambda: next(clock))
    assert busy is (0.75 * (os.cpu_count() or 1) > latency.BUSY_CPUS)
