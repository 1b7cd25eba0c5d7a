"""Sensitivity scans and the allocations built on them (Lab 2 (f), Lab 3 (g)): the scans against models
changed by hand, the sparsity totals met exactly and the least-drop rule against its closed form and brute force,
the bits allocation against brute force with the budget never exceeded, per-layer bytes that add up to
the file's, a mixed-width model through the file format and back; prune_by_counts against numpy."""
import copy
import itertools

import numpy as np
import pytest
import torch

from labkit import compress, models, prune, quant, sensitivity
from labkit.layers import prunable_layers
from labkit.sensitivity import Scan, allocate_bits, allocate_sparsity
from labkit.train import evaluate
from test_prune import SmallNet, toy_data


# --- prune_by_counts, pruned_count -----------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 7, 108, 1000])
@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.8, 0.95, 1.0])
def test_pruned_count_is_what_the_quantile_rule_prunes(n, q):
    w = torch.randperm(n).double() + 1.0                    # distinct magnitudes
    threshold = np.quantile(w.numpy(), q)
    assert prune.pruned_count(n, q) == int((w.numpy() <= threshold).sum())


def test_prune_by_counts_prunes_the_smallest_exactly_with_ties_by_position():
    net = SmallNet()
    with torch.no_grad():
        net.conv1.weight[2, 0, :, :] = 1e-4                 # 18 ties, the smallest: the cut of 10 is among them
        net.conv1.weight[3, 1, :, :] = -1e-4
    before = {n: m.weight.detach().clone() for n, m in prunable_layers(net)}
    counts = {"conv1": 10, "fc": 0, "conv2": 100}
    masks = prune.prune_by_counts(net, counts)
    assert list(masks) == list(counts)
    for name, k in counts.items():
        w = before[name].flatten().numpy()
        expect = np.ones(w.size, bool)
        expect[np.argsort(np.abs(w), kind="stable")[:k]] = False
        assert np.array_equal(masks[name].flatten().numpy(), expect)
        assert int((getattr(net, name).weight == 0).sum()) == k
    assert prune.masks(net).keys() == {"conv1", "conv2", "fc"}   # held


def test_prune_by_counts_never_loosens_and_refuses_bad_counts_before_changing_anything():
    net = SmallNet()
    prune.prune_by_counts(net, {"conv1": 50})
    prune.prune_by_counts(net, {"conv1": 10})               # fewer than pruned already: no change
    assert int((net.conv1.weight == 0).sum()) == 50
    state = copy.deepcopy(net.state_dict())
    for bad in [{"conv1": 109}, {"conv1": -1}, {"conv1": 2.5}, {"nope": 1}, {}, [("conv1", 3)]]:
        with pytest.raises(ValueError):
            prune.prune_by_counts(net, {"conv2": 5, **bad} if isinstance(bad, dict) and bad else bad)
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


# --- the scans -------------------------------------------------------------------------------------

def test_prune_scan_is_each_layer_pruned_alone_and_leaves_the_model_as_it_was():
    net, split = SmallNet(), toy_data(n=96).test
    state = copy.deepcopy(net.state_dict())
    scan = sensitivity.prune_scan(net, split, [0.3, 0.9], progress=False)
    assert scan.kind == "sparsity" and scan.points == (0.3, 0.9) and scan.images == 96
    assert scan.sizes == {"conv1": 108, "conv2": 216, "fc": 30}
    assert scan.base == evaluate(net, split)
    for name in ["conv1", "conv2", "fc"]:
        for q, acc in zip(scan.points, scan.accuracy[name]):
            alone = copy.deepcopy(net)
            prune.prune_by_percentage(alone, q, layers=[name])
            assert acc == evaluate(alone, split)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    assert not prune.masks(net)


def test_prune_scan_of_a_masked_model_keeps_its_masks():
    net, split = SmallNet(), toy_data().test
    prune.prune_by_percentage(net, 0.5)
    state = copy.deepcopy(net.state_dict())
    sensitivity.prune_scan(net, split, [0.9], layers=["conv2"], progress=False)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


def test_quant_scan_is_each_layer_quantized_alone_and_restores_the_model():
    net, split = SmallNet(), toy_data(n=96).test
    scan = sensitivity.quant_scan(net, split, [1, 2, 4], layers=["conv1", "conv2"], progress=False)
    assert scan.kind == "bits" and set(scan.accuracy) == {"conv1", "conv2"}
    for name in ["conv1", "conv2"]:
        for b, acc in zip(scan.points, scan.accuracy[name]):
            assert acc == evaluate(quant.quantized(net, b, layers=[name]), split)
    assert all(quant.bits_of(m) is None for _, m in prunable_layers(net))
    np.testing.assert_allclose(scan.drop("conv1"), scan.base - np.array(scan.accuracy["conv1"]))


@pytest.mark.parametrize("points", [[], [0.5, 0.3], [0.3, 0.3], [1.5]])
def test_scans_refuse_bad_points(points):
    with pytest.raises(ValueError):
        sensitivity.prune_scan(SmallNet(), toy_data().test, points, progress=False)


def test_scans_need_a_split():
    with pytest.raises(ValueError, match="Split"):
        sensitivity.prune_scan(SmallNet(), toy_data(), [0.5], progress=False)


# --- the sparsity allocation -----------------------------------------------------------------------

def linear_scan(slopes, sizes, points=(0.25, 0.5, 0.75, 1.0)):
    """A scan whose drops are d_i(s) = slope_i * s exactly."""
    acc = {f"l{i}": [0.9 - a * s for s in points] for i, a in enumerate(slopes)}
    return Scan("sparsity", tuple(points), acc, 0.9, {f"l{i}": n for i, n in enumerate(sizes)}, 100)


def test_linear_drops_are_pruned_cheapest_per_weight_first():
    # drop per pruned weight: l0 0.1 / 1000, l1 0.4 / 3000, l2 0.3 / 2000 -> l0 first, then l1, then l2
    scan = linear_scan([0.1, 0.4, 0.3], [1000, 3000, 2000])
    assert allocate_sparsity(scan, 700) == {"l0": 700, "l1": 0, "l2": 0}
    assert allocate_sparsity(scan, 2100) == {"l0": 1000, "l1": 1100, "l2": 0}
    assert allocate_sparsity(scan, 5000) == {"l0": 1000, "l1": 3000, "l2": 1000}


def brute_force_counts(scan, total, step):
    """The least predicted drop over every allocation in multiples of ``step`` weights."""
    names = list(scan.sizes)
    grids = [range(0, int(scan.points[-1] * scan.sizes[n]) + 1, step) for n in names]
    best = None
    for ks in itertools.product(*grids):
        if sum(ks) == total:
            drop = sensitivity.predicted_drop(scan, dict(zip(names, ks)))
            best = drop if best is None else min(best, drop)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_the_least_drop_matches_brute_force_on_convex_curves(seed):
    rng = np.random.default_rng(seed)
    points = (0.25, 0.5, 0.75, 1.0)
    sizes = {f"l{i}": int(rng.integers(1, 5)) * 20 for i in range(3)}
    acc = {}
    for name in sizes:                                  # convex, increasing drops: the greedy is exact
        slopes = np.sort(rng.random(4))
        acc[name] = list(0.9 - np.cumsum(slopes * 0.25))
    scan = Scan("sparsity", points, acc, 0.9, sizes, 100)
    for total in (0, 20, 60, sum(sizes.values()) // 2):
        counts = allocate_sparsity(scan, total)
        assert sum(counts.values()) == total
        assert sensitivity.predicted_drop(scan, counts) <= brute_force_counts(scan, total, 5) + 1e-9


def test_a_noisy_dip_never_counts_as_less_harmful_than_the_point_before():
    acc = {"dip": [0.8, 0.85, 0.4], "steady": [0.855, 0.81, 0.765]}   # dip's drops 0.1, 0.05 (noise), 0.5
    scan = Scan("sparsity", (0.3, 0.6, 0.9), acc, 0.9, {"dip": 100, "steady": 100}, 50)
    # read as 0.1 at 0.6 too, dip costs 0.1 / 60 weights; steady 0.045 / 30, cheaper: steady goes first.
    # Taken at face value (0.05 at 0.6), dip would cost 0.05 / 60 and go first.
    assert sensitivity.predicted_drop(scan, {"dip": 60, "steady": 0}) == pytest.approx(0.1)
    assert allocate_sparsity(scan, 90) == {"dip": 0, "steady": 90}


def test_robust_layers_are_pruned_first_and_capped_at_the_scanned_range():
    acc = {"flat": [0.9, 0.9, 0.9], "steep": [0.5, 0.2, 0.1]}
    scan = Scan("sparsity", (0.3, 0.6, 0.9), acc, 0.9, {"flat": 100, "steep": 100}, 50)
    assert allocate_sparsity(scan, 95) == {"flat": 90, "steep": 5}   # flat to its 0.9 cap, the rest from steep
    assert allocate_sparsity(scan, 40) == {"flat": 40, "steep": 0}
    with pytest.raises(ValueError, match="scan up to"):
        allocate_sparsity(scan, 181)


@pytest.mark.parametrize("seed", range(25))
def test_the_total_is_met_exactly_on_noisy_scans(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 8))
    points = tuple(np.round(np.sort(rng.choice(np.arange(5, 100, 5), size=4, replace=False)) / 100, 2))
    sizes = {f"l{i}": int(rng.integers(1, 5000)) for i in range(k)}
    acc = {name: list(0.9 - np.clip(rng.normal(0, 0.05, 4) + np.linspace(0, 1, 4) * rng.random(), -0.1, 0.9))
           for name in sizes}
    scan = Scan("sparsity", points, acc, 0.9, sizes, 100)
    most = sum(int(np.floor(points[-1] * n + 1e-9)) for n in sizes.values())   # no layer past the scanned range
    for total in {0, 1, most // 3, most // 2, most}:
        counts = allocate_sparsity(scan, total)
        assert sum(counts.values()) == total
        assert all(0 <= counts[n] <= sizes[n] for n in sizes)


def test_allocation_refuses_a_bits_scan_and_bad_totals():
    scan = linear_scan([0.1], [100])
    with pytest.raises(ValueError):
        allocate_sparsity(scan, 101)
    with pytest.raises(ValueError):
        allocate_sparsity(scan, -1)
    bits_scan = Scan("bits", (2, 3), {"l0": [0.1, 0.5]}, 0.9, {"l0": 100}, 10)
    with pytest.raises(ValueError, match="pruning scan"):
        allocate_sparsity(bits_scan, 10)


# --- the bits allocation ---------------------------------------------------------------------------

def brute_force(drops, sizes, budget):
    names = list(drops)
    best = None
    for widths in itertools.product(*[sorted(drops[n]) for n in names]):
        size = sum(sizes[n][b] for n, b in zip(names, widths))
        drop = sum(drops[n][b] for n, b in zip(names, widths))
        if size <= budget and (best is None or drop < best[0] - 1e-12):
            best = (drop, size)
    return best


@pytest.mark.parametrize("seed", range(30))
def test_bits_allocation_is_optimal_and_within_the_budget(seed):
    rng = np.random.default_rng(seed)
    names = [f"l{i}" for i in range(int(rng.integers(1, 6)))]
    widths = [2, 3, 4]
    n = {name: int(rng.integers(10, 3000)) for name in names}
    sizes = {name: {b: (b * n[name] + 32 * 2 ** b + int(rng.integers(0, 80))) / 8 for b in widths} for name in names}
    drops = {name: {b: float(rng.normal(0.3 / b ** 2, 0.02)) for b in widths} for name in names}
    uniform = sum(sizes[name][3] for name in names)
    for budget in [uniform, uniform * 0.9, uniform * 1.2, sum(sizes[x][2] for x in names)]:
        alloc = allocate_bits(drops, sizes, budget)
        size = sum(sizes[x][b] for x, b in alloc.items())
        drop = sum(drops[x][b] for x, b in alloc.items())
        assert size <= budget
        assert drop == pytest.approx(brute_force(drops, sizes, budget)[0], abs=1e-12)
    assert sum(drops[x][b] for x, b in allocate_bits(drops, sizes, uniform).items()) <= \
        sum(drops[x][3] for x in names) + 1e-12                # never worse than uniform at its size


def test_bits_allocation_refuses_an_impossible_budget_and_mismatched_tables():
    sizes, drops = {"a": {2: 10.0, 3: 15.0}}, {"a": {2: 0.2, 3: 0.1}}
    with pytest.raises(ValueError, match="below the smallest"):
        allocate_bits(drops, sizes, 9.875)
    with pytest.raises(ValueError, match="below the smallest"):
        allocate_bits(drops, sizes, 9.95)               # not a whole number of bits: never rounded up
    assert allocate_bits(drops, sizes, 10.0) == {"a": 2}
    with pytest.raises(ValueError):
        allocate_bits(drops, {"b": {2: 10.0, 3: 15.0}}, 100)
    with pytest.raises(ValueError):
        allocate_bits(drops, {"a": {2: 10.0}}, 100)


def test_bit_drops_never_make_fewer_bits_look_less_harmful():
    scan = Scan("bits", (2, 3, 4), {"a": [0.5, 0.88, 0.86], "b": [0.89, 0.7, 0.9]}, 0.9, {"a": 10, "b": 10}, 100)
    drops = scan.bit_drops()
    assert drops["a"] == pytest.approx({2: 0.4, 3: 0.04, 4: 0.04})        # 3 bits at least as harmful as 4
    assert drops["b"] == pytest.approx({2: 0.2, 3: 0.2, 4: 0.0})          # 2 bits at least as harmful as 3
    assert "one standard error" in scan.table() and "1.00%" in scan.table()
    with pytest.raises(ValueError, match="bits scan"):
        linear_scan([0.1], [10]).bit_drops()


def test_layer_bytes_add_up_to_a_mixed_models_file_and_the_widths_round_trip(tmp_path):
    net = models.resnet20()                                  # random weights: every level used
    prune.prune_by_percentage(net, 0.6)
    names = [n for n, _ in quant.quantizable_layers(net)]
    sizes = sensitivity.layer_bytes(net, [2, 3, 5])
    assert set(sizes) == set(names) and quant.bits_of(net.stage1[0].conv1) is None   # net unchanged
    widths = {name: (2, 3, 5)[i % 3] for i, name in enumerate(names)}
    mixed = quant.quantized_widths(net, widths)
    report = compress.save(mixed, tmp_path / "mixed.bin", huffman=False)
    by_layer = {layer.name: layer.total / 8 for layer in report.layers}
    assert sum(sizes[n][widths[n]] for n in names) == pytest.approx(sum(by_layer[n] for n in names))
    loaded = compress.load(tmp_path / "mixed.bin")
    for name, b in widths.items():
        w = loaded.get_submodule(name).weight.detach()
        assert torch.equal(w, mixed.get_submodule(name).weight.detach())
        assert 2 < torch.unique(w[w != 0]).numel() <= 2 ** b   # each layer at its own width
    uniform = compress.size_report(quant.quantized(net, 3), huffman=False)
    budget = sum(sizes[n][3] for n in names)
    assert budget == pytest.approx(sum(l.total / 8 for l in uniform.layers if l.name in names))


def test_a_mixed_width_model_round_trips_through_a_checkpoint(tmp_path):
    from labkit import checkpoints
    net = models.resnet20()
    names = [n for n, _ in quant.quantizable_layers(net)]
    widths = {name: (4, 2, 3)[i % 3] for i, name in enumerate(names)}
    net = quant.quantized_widths(net, widths)
    checkpoints.save(net, tmp_path / "mixed.pt")
    back = checkpoints.load(tmp_path / "mixed.pt")
    assert {name: quant.bits_of(back.get_submodule(name)) for name in names} == widths
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(back.eval()(x), net.eval()(x), rtol=0, atol=0)


# --- issue 27: a Scan is checked, no layer is pruned past the scanned range --------------------------

@pytest.mark.parametrize("bad, match", [
    (dict(points=(0.5, 0.3)), "increasing"),
    (dict(points=(0.3, 1.5)), "increasing"),
    (dict(accuracy={"a": [0.8, float("nan")], "b": [0.9, 0.9]}), "'a' must have one accuracy in"),
    (dict(accuracy={"a": [0.8], "b": [0.9, 0.9]}), "'a' must have one accuracy in"),
    (dict(accuracy={"a": [0.8, 1.7], "b": [0.9, 0.9]}), "'a' must have one accuracy in"),
    (dict(sizes={"a": 100, "b": -5}), "'b' must have a positive number of weights"),
    (dict(sizes={"a": 100, "b": 0}), "'b' must have a positive number of weights"),
    (dict(sizes={"a": 100}), "same layers"),
    (dict(base=float("nan")), "base accuracy"),
])
def test_a_scan_that_is_not_whole_is_refused_by_name(bad, match):
    """Hand-made or edited scans gave negative counts or an allocation computed from NaN."""
    fields = dict(kind="sparsity", points=(0.3, 0.6), accuracy={"a": [0.8, 0.7], "b": [0.9, 0.9]}, base=0.9,
                  sizes={"a": 100, "b": 100}, images=50)
    with pytest.raises(ValueError, match=match):
        allocate_sparsity(Scan(**{**fields, **bad}), 50)
    bits = {**fields, "kind": "bits", "points": (2, 3), **{k: v for k, v in bad.items() if k != "points"}}
    if "points" not in bad:
        with pytest.raises(ValueError, match=match):
            Scan(**bits).bit_drops()


def test_no_layer_is_pruned_past_the_largest_scanned_sparsity():
    """Rounding by largest remainder took a layer one weight past its scanned range (0.9 of 101 = 90.9)."""
    scan = Scan("sparsity", (0.45, 0.9), {"a": [0.9, 0.9], "b": [0.9, 0.9]}, 0.9, {"a": 101, "b": 101}, 50)
    assert allocate_sparsity(scan, 180) == {"a": 90, "b": 90}
    with pytest.raises(ValueError, match=r"\(180 at most\)"):
        allocate_sparsity(scan, 181)


@pytest.mark.parametrize("drops, sizes, match", [
    ({"a": {2: float("nan"), 3: 0.1}}, {"a": {2: 10.0, 3: 15.0}}, "drop must be a finite number"),
    ({"a": {2: 0.2, 3: 0.1}}, {"a": {2: -10.0, 3: 15.0}}, "size must be a positive number"),
    ({"a": {2: 0.2, 3: 0.1}}, {"a": {2: float("inf"), 3: 15.0}}, "size must be a positive number"),
])
def test_bits_allocation_refuses_non_finite_drops_and_bad_sizes(drops, sizes, match):
    with pytest.raises(ValueError, match=match):
        allocate_bits(drops, sizes, 100)


def test_predicted_drop_refuses_counts_a_layer_cannot_hold():
    """Issue 27, adversarial probe: predicted_drop returned nan for a NaN count, and for a negative
    count or more weights than the layer holds the drop of the scan's end (np.interp clamps), without a word."""
    scan = Scan(kind="sparsity", points=(0.3, 0.5, 0.9), accuracy={"a": [0.9, 0.85, 0.5], "b": [0.9, 0.89, 0.8]},
                base=0.9, sizes={"a": 100, "b": 1000}, images=1000)
    assert sensitivity.predicted_drop(scan, {"a": np.int64(30), "b": 470}) == pytest.approx(
        sensitivity.predicted_drop(scan, {"a": 30, "b": 470}))
    for bad in (float("nan"), -50, 10**6, 30.5, True):
        with pytest.raises(ValueError, match=r"predicted_drop: counts\['a'\].*must be an int in 0..100"):
            sensitivity.predicted_drop(scan, {"a": bad, "b": 470})


# --- the noise floor (issue 28: points within the noise must not steer the allocation) ---------------

def noisy_scan():
    """Two layers that are, in truth, the same: 'lucky' gains 2 images of 1000 at 0.5 sparsity, 'unlucky'
    loses 2; both lose 20 % at 1.0. One standard error near 90 % on 1000 images is 0.95 points."""
    acc = {"unlucky": [0.898, 0.70], "lucky": [0.902, 0.70]}
    return Scan("sparsity", (0.5, 1.0), acc, 0.9, {"unlucky": 100, "lucky": 100}, 1000)


def test_scan_noise_is_one_standard_error_and_names_the_points_within_it():
    scan = noisy_scan()
    assert scan.noise == pytest.approx((0.9 * 0.1 / 1000) ** 0.5)
    assert scan.within_noise() == {"unlucky": [0.5], "lucky": [0.5]}
    assert scan.within_noise(0.001) == {"unlucky": [], "lucky": []}


def test_points_within_the_noise_count_as_no_drop_either_way():
    scan = noisy_scan()
    # as measured (noise 0), 'unlucky' looks costly at 0.5 and 'lucky' free: all 50 weights from 'lucky'
    assert allocate_sparsity(scan, 50, noise=0) == {"lucky": 50, "unlucky": 0}
    assert sensitivity.predicted_drop(scan, {"lucky": 0, "unlucky": 50}, noise=0) == pytest.approx(0.002)
    # with the floor, both are free up to 0.5: the tie goes by model order ('unlucky' first), at no cost
    assert allocate_sparsity(scan, 50) == {"unlucky": 50, "lucky": 0}
    assert sensitivity.predicted_drop(scan, {"lucky": 0, "unlucky": 50}) == 0
    assert sensitivity.predicted_drop(scan, {"lucky": 50, "unlucky": 50}) == 0
    assert allocate_sparsity(scan, 100) == {"lucky": 50, "unlucky": 50}
    assert allocate_sparsity(scan, 100, noise=0) == {"lucky": 50, "unlucky": 50}


def test_a_drop_beyond_the_noise_still_counts():
    scan = noisy_scan()
    assert sensitivity.predicted_drop(scan, {"lucky": 100, "unlucky": 0}) == pytest.approx(0.2)


@pytest.mark.parametrize("bad", [-0.1, 1.0, "1%", True, float("nan")])
def test_a_bad_noise_floor_is_refused(bad):
    with pytest.raises(ValueError, match="noise must be"):
        allocate_sparsity(noisy_scan(), 50, noise=bad)


def test_additivity_says_whether_the_summed_drops_predict_the_measured_one():
    scan = linear_scan([0.2, 0.2], [1000, 1000])            # 100 images; each layer at 0.5 drops 10 points
    counts = {"l0": 500, "l1": 500}
    ok = sensitivity.additivity(scan, counts, 0.9 - 0.2, label="both", noise=0)
    assert ok.predicted == pytest.approx(0.2) and ok.measured == pytest.approx(0.2)
    assert "within the noise" in str(ok)
    # independent binomial terms: the measured model at 70 % and each layer's scanned 80 %
    assert ok.se == pytest.approx((0.7 * 0.3 / 100 + 2 * 0.8 * 0.2 / 100) ** 0.5)
    worse = sensitivity.additivity(scan, counts, 0.3, label="both", noise=0)
    assert "do not add up" in str(worse) and "cost more" in str(worse) and "3.0 times the sum" in str(worse)
    better = sensitivity.additivity(scan, counts, 0.88, label="both", noise=0)
    assert "cost less" in str(better)
    with pytest.raises(ValueError, match="fraction in"):
        sensitivity.additivity(scan, counts, 88.0, label="both")
