"""Magnitude pruning: thresholds against numpy, masks against torch.nn.utils.prune, masks that
hold through training, iterative schedules, save/load, and errors on bad input."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from labkit import checkpoints, prune
from labkit.data import CIFAR10, Split
from labkit.prune import (IterativePruning, Mask, RecordSparsity, Sparsity,
                          global_prune_by_percentage, magnitude_threshold, make_permanent, masks,
                          prune_by_percentage, set_mask, sparsity, sparsity_table)
from labkit.train import train

LAYERS = ["conv1", "conv2", "fc"]


class SmallNet(nn.Module):
    """Two convs and a Linear (108 + 216 + 30 weights); any input size (global average pool)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):                      # (B, 3, H, W)
        x = F.relu(self.conv1(x))              # (B, 4, H, W)
        x = F.relu(self.conv2(x))              # (B, 6, H/2, W/2)
        return self.fc(x.mean(dim=(2, 3)))     # (B, 5)


def batch(seed=0, n=16, size=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 5, (n,), generator=g)


def step(net, optimizer, seed=0):
    """One SGD step on a random batch; returns the loss."""
    X, y = batch(seed)
    loss = F.cross_entropy(net(X), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def weights(net):
    """{layer: effective weight as float64 numpy}."""
    return {name: getattr(net, name).weight.detach().double().numpy().copy() for name in LAYERS}


def numpy_count(w, q):
    """How many |w| <= numpy.percentile(|w|, 100 q): the rule, computed independently."""
    a = np.abs(np.asarray(w, dtype=np.float64)).ravel()
    return int((a <= np.percentile(a, 100 * q)).sum())


def state_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- the threshold ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 5, 108, 1001])
@pytest.mark.parametrize("q", [0.0, 0.1, 1 / 3, 0.5, 0.8, 0.999, 1.0])
def test_threshold_is_numpys_linear_quantile(n, q):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n))
    expected = np.quantile(np.abs(x.double().numpy()), q)  # method='linear'
    assert magnitude_threshold(x, q).item() == expected
    assert magnitude_threshold(x, q).item() == pytest.approx(torch.quantile(x.abs().double(), q).item(), rel=1e-15, abs=0)  # 1 ulp


def test_threshold_has_no_size_limit():
    x = torch.arange(2**24 + 3, dtype=torch.float32)  # torch.quantile refuses more than 2**24
    assert magnitude_threshold(x, 0.5).item() == np.quantile(x.numpy().astype(np.float64), 0.5)


# --- masks against torch.nn.utils.prune -----------------------------------------------------------

@pytest.mark.parametrize("q", [0.3, 0.5, 0.8])
def test_layer_masks_equal_torch_l1_unstructured(q):
    net = SmallNet()
    reference = copy.deepcopy(net)
    before = weights(net)
    applied = prune_by_percentage(net, q)
    assert list(applied) == LAYERS
    for name in LAYERS:
        n = before[name].size
        count = numpy_count(before[name], q)
        assert count == n - int(applied[name].sum())             # our count is numpy's rule
        assert count == math.floor(q * (n - 1)) + 1              # (no ties in random weights)
        module = getattr(reference, name)
        torch_prune.l1_unstructured(module, "weight", amount=count)
        assert torch.equal(module.weight_mask.bool(), applied[name])
        assert torch.equal(getattr(net, name).weight, module.weight)


@pytest.mark.parametrize("q", [0.3, 0.5, 0.8])
def test_global_masks_equal_torch_global_unstructured(q):
    net = SmallNet()
    reference = copy.deepcopy(net)
    before = weights(net)
    applied = global_prune_by_percentage(net, q)
    all_w = np.concatenate([w.ravel() for w in before.values()])
    count = numpy_count(all_w, q)
    assert count == sum(int((~m).sum()) for m in applied.values())
    torch_prune.global_unstructured([(getattr(reference, n), "weight") for n in LAYERS],
                                    pruning_method=torch_prune.L1Unstructured, amount=count)
    for name in LAYERS:
        assert torch.equal(getattr(reference, name).weight_mask.bool(), applied[name])
    # one threshold: every kept weight is larger than every pruned one, across layers
    kept = np.concatenate([np.abs(before[n])[applied[n].numpy()] for n in LAYERS])
    pruned = np.concatenate([np.abs(before[n])[~applied[n].numpy()] for n in LAYERS])
    assert kept.min() > pruned.max()
    # and the layers end up with different sparsities
    assert len({round(s, 6) for s in sparsity(net).layers.values()}) > 1


# --- exact counts by hand, ties included ------------------------------------------------------------

@pytest.mark.parametrize("q, pruned", [
    (0.0, 3),    # threshold = min |w| = 1: all three 1s (the rule is |w| <= threshold)
    (0.5, 3),    # p = 2: threshold 1
    (0.6, 3),    # p = 2.4: threshold 1.4
    (0.75, 4),   # p = 3: threshold 2
    (0.9, 4),    # p = 3.6: threshold 2.6
    (1.0, 5),    # everything
])
def test_exact_counts_with_ties(q, pruned):
    fc = nn.Linear(5, 1, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, -1.0, 1.0, 2.0, -3.0]]))
    applied = prune_by_percentage(fc, q)
    assert int((~applied[""]).sum()) == pruned
    expected = [0.0] * pruned + [1.0, 1.0, 1.0, 2.0, 3.0][pruned:]   # the smallest go first
    assert torch.equal(fc.weight.detach().abs().flatten().sort().values, torch.tensor(expected))


def test_interpolated_threshold_between_two_weights():
    fc = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[0.4, -0.1, 0.3, -0.2]]))
    assert magnitude_threshold(fc.weight, 0.5).item() == pytest.approx(0.25)
    prune_by_percentage(fc, 0.5)
    assert torch.equal(fc.weight, torch.tensor([[0.4, 0.0, 0.3, 0.0]]))


def test_q_zero_prunes_the_smallest_and_q_one_prunes_all():
    net = SmallNet()
    before = weights(net)
    prune_by_percentage(net, 0.0)
    for name, z in sparsity(net).zeros.items():
        assert z == 1
        w = getattr(net, name).weight.detach().double().numpy()
        assert w.ravel()[np.abs(before[name]).argmin()] == 0
    prune_by_percentage(net, 1.0)
    assert sparsity(net).total == 1.0


# --- masks hold through training --------------------------------------------------------------------

@pytest.mark.parametrize("clear_momentum", [True, False])
def test_pruned_weights_stay_zero_and_get_zero_gradient(clear_momentum):
    net = SmallNet()
    params = {name: getattr(net, name).weight for name in LAYERS}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    for s in range(3):                         # momentum builds up before pruning
        step(net, optimizer, seed=s)
    applied = prune_by_percentage(net, 0.6, optimizer=optimizer if clear_momentum else None)
    kept_before = {n: getattr(net, n).weight.detach()[applied[n]].clone() for n in LAYERS}
    for name in LAYERS:
        original = getattr(net, name).parametrizations.weight.original
        assert original is params[name]        # same Parameter object as the optimizer's
        assert any(p is original for p in optimizer.param_groups[0]["params"])
    for s in range(3, 8):
        step(net, optimizer, seed=s)
        for name in LAYERS:
            module, keep = getattr(net, name), applied[name]
            assert torch.all(module.parametrizations.weight.original.grad[~keep] == 0)
            assert torch.all(module.weight[~keep] == 0)
    for name in LAYERS:
        module, keep = getattr(net, name), applied[name]
        assert not torch.equal(module.weight.detach()[keep], kept_before[name])   # it did train
        original = module.parametrizations.weight.original.detach()
        if clear_momentum:
            assert torch.all(original[~keep] == 0)
        else:   # the old momentum moves the stored weight; the mask still zeroes what forward uses
            assert torch.any(original[~keep] != 0)


def test_repruning_tightens_the_mask_and_never_loosens_it():
    net = SmallNet()
    first = prune_by_percentage(net, 0.5)
    masked = weights(net)                      # zeros where pruned
    second = prune_by_percentage(net, 0.8)
    for name in LAYERS:
        assert torch.all(second[name] <= first[name])      # pruned stays pruned
        assert int((~second[name]).sum()) == numpy_count(masked[name], 0.8)
        assert getattr(net, name).parametrizations.weight[0].mask is masks(net)[name]
        assert len(getattr(net, name).parametrizations.weight) == 1
    third = prune_by_percentage(net, 0.3)
    for name in LAYERS:
        assert torch.equal(third[name], second[name])


def test_hold_false_zeroes_in_place_and_weights_can_regrow():
    net = SmallNet()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    applied = prune_by_percentage(net, 0.5, hold=False)
    assert not any(parametrize.is_parametrized(getattr(net, n)) for n in LAYERS)
    assert all(torch.all(getattr(net, n).weight[~applied[n]] == 0) for n in LAYERS)
    step(net, optimizer)
    assert all(torch.any(getattr(net, n).weight[~applied[n]] != 0) for n in LAYERS)


# --- iterative pruning --------------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["layer", "global"])
def test_iterative_pruning_schedule_regrowth_and_eligibility(scope):
    target, steps, epochs = 0.8, 4, 6
    net = SmallNet()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.875, weight_decay=1e-4)
    cb = IterativePruning(target=target, steps=steps, scope=scope)
    sizes = {n: getattr(net, n).weight.numel() for n in LAYERS}
    for epoch in range(epochs):
        cb.on_epoch_begin(epoch, net, optimizer)
        q = target * min(epoch + 1, steps) / steps
        s = sparsity(net)
        if scope == "layer":
            for name in LAYERS:
                assert abs(s.zeros[name] - q * sizes[name]) <= 1
        else:
            assert abs(sum(s.zeros.values()) - q * sum(sizes.values())) <= 1
        held = epoch + 1 >= steps
        assert all(parametrize.is_parametrized(getattr(net, n)) == held for n in LAYERS)
        zero_before = {n: getattr(net, n).weight.detach() == 0 for n in LAYERS}
        for k in range(2):
            step(net, optimizer, seed=10 * epoch + k)
        regrown = sum(int((zero_before[n] & (getattr(net, n).weight != 0)).sum()) for n in LAYERS)
        if held:
            assert regrown == 0
            assert sparsity(net).zeros == s.zeros
            for n in LAYERS:   # the momentum was cleared: the stored weights stay zero too
                layer = getattr(net, n)
                assert (layer.parametrizations.weight.original[~masks(net)[n]] == 0).all()
        else:
            assert regrown > 0
        record = {"epoch": epoch + 1}
        cb.on_epoch_end(epoch, net, record)
        assert record["eligible"] == held
        assert record["sparsity_start"] == s.total
        assert record["sparsity"] == sparsity(net).total
    assert sparsity(net).total == pytest.approx(target, abs=len(LAYERS) / sum(sizes.values()))


def test_iterative_pruning_keeps_the_masks_of_its_last_step():
    """``keep``: what the last step decided, also for a step that holds nothing (Lab 3 (e)'s
    "schedule" quantizer takes it through labkit.layers.hand_schedule_mask)."""
    net = SmallNet()
    cb = IterativePruning(target=0.6, steps=3, scope="global")
    assert cb.keep == {}
    for epoch in range(4):
        before = {n: getattr(net, n).weight.detach().clone() for n in LAYERS}
        cb.on_epoch_begin(epoch, net, None)
        assert list(cb.keep) == LAYERS
        for n in LAYERS:
            assert torch.equal(cb.keep[n], getattr(net, n).weight != 0)
        if epoch == 3:                           # no step after the last: the masks stay
            assert all(torch.equal(getattr(net, n).weight, before[n]) for n in LAYERS)
            assert all(torch.equal(cb.keep[n], masks(net)[n]) for n in LAYERS)
        if epoch < 2:                            # regrowth while nothing is held
            with torch.no_grad():
                for n in LAYERS:
                    getattr(net, n).weight.add_(0.01)


def test_iterative_pruning_keeps_another_callbacks_ineligible_flag():
    net = SmallNet()
    cb = IterativePruning(target=0.5, steps=1)
    cb.on_epoch_begin(0, net, None)
    record = {"eligible": False}
    cb.on_epoch_end(0, net, record)
    assert record["eligible"] is False


def toy_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def split():
        return Split(torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8),
                     torch.randint(0, 5, (n,), generator=g))

    return CIFAR10(train=split(), test=split(), classes=[str(i) for i in range(5)])


def test_iterative_pruning_in_the_training_loop():
    net = SmallNet()
    history = train(net, toy_data(), epochs=4, batch_size=16, lr=0.05, augment=False, progress=False,
                    callbacks=[IterativePruning(target=0.6, steps=2)])
    assert history.column("eligible") == [False, True, True, True]
    assert history.best_epoch >= 2
    assert history.records[0]["sparsity"] < history.records[0]["sparsity_start"]   # regrowth
    final = sparsity(net).total
    assert history.column("sparsity")[1:] == [final] * 3
    assert final == pytest.approx(0.6, abs=3 / 354)


def test_record_sparsity_under_another_key_beside_a_schedule():
    """Lab 3 (e): the schedule records the sparsity of every layer, a second callback that of some."""
    net = SmallNet()
    convs = RecordSparsity(layers=["conv1", "conv2"], require_masks=False, key="sparsity_conv")
    history = train(net, toy_data(), epochs=3, batch_size=16, lr=0.05, augment=False, progress=False,
                    callbacks=[IterativePruning(target=0.6, steps=2), convs])
    assert history.records[-1]["sparsity"] == sparsity(net).total
    assert history.records[-1]["sparsity_conv"] == sparsity(net, layers=["conv1", "conv2"]).total
    assert history.records[-1]["sparsity_conv"] != history.records[-1]["sparsity"]
    with pytest.raises(ValueError, match="key must be"):
        RecordSparsity(key="")


def test_record_sparsity_needs_masks_and_records_sparsity():
    net = SmallNet()
    with pytest.raises(ValueError, match="no pruning mask.*require_masks=False"):
        RecordSparsity().on_train_begin(net, None)
    prune_by_percentage(net, 0.8)
    history = train(net, toy_data(), epochs=2, batch_size=16, lr=0.05, augment=False, progress=False,
                    callbacks=[RecordSparsity()])
    # zeros counted here, on the weights themselves: 0.8-quantile pruning of 108, 216, 30 weights
    zeros = sum(int((getattr(net, n).weight == 0).sum()) for n in LAYERS)
    assert zeros == sum(math.floor(0.8 * (n - 1)) + 1 for n in (108, 216, 30))
    assert history.column("sparsity") == [zeros / 354] * 2


def test_record_sparsity_of_chosen_layers_without_masks():
    net = SmallNet()
    with torch.no_grad():
        net.conv1.weight[:2] = 0.0             # 2 of 4 output channels: 54 of 108 weights
        net.fc.weight[0] = 0.0                 # not in the chosen layers
    cb = RecordSparsity(layers=["conv1", "conv2"], require_masks=False)
    cb.on_train_begin(net, None)
    record = {}
    cb.on_epoch_end(0, net, record)
    assert record == {"sparsity": 54 / (108 + 216)}


# --- sparsity, save/load, permanence -------------------------------------------------------------

def test_sparsity_counts_zeros_of_the_effective_weight():
    net = SmallNet()
    with torch.no_grad():
        net.conv2.weight[0] = 0.0               # zeros without any mask count too
    prune_by_percentage(net, 0.5, layers=["conv1"])
    s = sparsity(net)
    for name, w in weights(net).items():
        assert s.zeros[name] == int((w == 0).sum()) and s.sizes[name] == w.size
    assert s.total == sum(s.zeros.values()) / 354
    assert list(s.layers) == LAYERS


def test_save_and_load_round_trip(tmp_path):
    net = SmallNet(seed=0)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    prune_by_percentage(net, 0.7)
    step(net, optimizer)                       # stored weights differ from the fresh model's
    path = tmp_path / "pruned.pt"
    torch.save(net.state_dict(), path)
    fresh = SmallNet(seed=1)
    checkpoints.load(path, fresh)
    X, _ = batch(5)
    assert torch.equal(fresh(X), net(X))
    assert masks(fresh).keys() == masks(net).keys()
    assert all(torch.equal(masks(fresh)[n], masks(net)[n]) for n in LAYERS)
    assert state_equal(fresh.state_dict(), net.state_dict())
    other = checkpoints.load(torch.load(path, weights_only=True), SmallNet(seed=2))   # a mapping works too
    assert torch.equal(other(X), net(X))


def test_load_rejects_a_mask_for_a_missing_layer():
    net = SmallNet()
    prune_by_percentage(net, 0.5)
    sd = {("extra." + k if k.startswith("fc.") else k): v for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="'extra.fc'"):
        checkpoints.load(sd, SmallNet())


def test_make_permanent_leaves_plain_parameters_with_the_zeros():
    net = SmallNet()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    step(net, optimizer)
    applied = prune_by_percentage(net, 0.5)    # momentum not cleared: originals drift
    step(net, optimizer, seed=1)
    params = {n: getattr(net, n).parametrizations.weight.original for n in LAYERS}
    X, _ = batch(3)
    y_before = net(X)
    make_permanent(net)
    for name in LAYERS:
        module = getattr(net, name)
        assert not parametrize.is_parametrized(module)
        assert type(module.weight) is nn.Parameter and module.weight is params[name]
        assert torch.all(module.weight[~applied[name]] == 0)
    assert torch.equal(net(X), y_before)
    assert masks(net) == {}
    assert set(net.state_dict()) == set(SmallNet().state_dict())


def test_one_layer_name_as_a_string_is_that_layer():
    """Issue 14 #8: layers='conv1' was read letter by letter ("layer 'c' is not a module")."""
    net = SmallNet()
    applied = prune_by_percentage(net, 0.5, layers="conv1")
    assert list(applied) == ["conv1"] and list(masks(net)) == ["conv1"]
    assert sparsity(net, layers="conv1").zeros == {"conv1": 54}
    assert list(global_prune_by_percentage(SmallNet(), 0.5, layers="fc")) == ["fc"]


def test_set_mask_refuses_another_shape():
    net = SmallNet()
    with pytest.raises(ValueError, match=r"the weight's shape \(4, 3, 3, 3\)"):
        set_mask(net.conv1, torch.ones(3, dtype=torch.bool))
    assert masks(net) == {}


@pytest.mark.parametrize("bake", ["make_permanent", "reprune"])
def test_a_deep_copy_is_independent_of_its_original(bake):
    """Issue 14 #5: parametrize's injected class was shared by copy.deepcopy, so make_permanent on
    the copy deleted the original's weight property (AttributeError on pruned(x))."""
    pruned = SmallNet()
    prune_by_percentage(pruned, 0.6)
    X, _ = batch(4)
    y = pruned(X)
    c = copy.deepcopy(pruned)
    assert type(c.conv1) is not type(pruned.conv1)
    if bake == "make_permanent":
        make_permanent(c)
        assert masks(c) == {}
    else:
        prune_by_percentage(c, 0.9)
    assert torch.equal(pruned(X), y)                   # the original: unchanged and working
    assert list(masks(pruned)) == LAYERS and sparsity(pruned).total < 0.7
    assert not any(masks(pruned)[n] is masks(c).get(n) for n in LAYERS)
    again = copy.deepcopy(c)                           # a copy of a copy, then the middle one baked
    make_permanent(c)
    assert torch.equal(again(X), c(X))


def test_a_copy_of_a_mask_registered_by_torch_itself_is_baked_without_breaking_the_original():
    """Registered with torch's register_parametrization (not labkit's), the class is shared by
    deepcopy; make_permanent gives the copy's layer a class of its own before removing."""
    net = SmallNet()
    parametrize.register_parametrization(net.fc, "weight", Mask(torch.rand(5, 6) > 0.5))
    X, _ = batch(4)
    y = net(X)
    c = copy.deepcopy(net)
    make_permanent(c)
    assert not parametrize.is_parametrized(c.fc) and torch.equal(net(X), y)
    assert parametrize.is_parametrized(net.fc)


# --- stacking with another parametrization (Lab 3's quantizer) --------------------------------------

class Reciprocal(nn.Module):
    """Stands in for a quantizer: reverses the order of magnitudes, so ranking on it would differ."""

    def forward(self, W):
        return 1.0 / W


def test_mask_goes_first_under_another_parametrization_and_ranks_float_weights():
    net, reference = SmallNet(), SmallNet()
    parametrize.register_parametrization(net.conv1, "weight", Reciprocal())
    applied = prune_by_percentage(net, 0.5)
    expected = prune_by_percentage(reference, 0.5)
    assert torch.equal(applied["conv1"], expected["conv1"])
    plist = net.conv1.parametrizations.weight
    assert isinstance(plist[0], Mask) and isinstance(plist[1], Reciprocal)
    assert "conv1.parametrizations.weight.0.mask" in net.state_dict()
    assert torch.equal(net.conv1.weight, 1.0 / (reference.conv1.weight))   # Reciprocal(W * mask)


# --- ResNet-20 --------------------------------------------------------------------------------------

def test_resnet20_has_268336_prunable_weights_and_prunes_to_80_percent(tmp_path):
    from labkit.models import resnet20

    net = resnet20()
    prune_by_percentage(net, 0.8)
    s = sparsity(net)
    assert sum(s.sizes.values()) == 268_336 and len(s.sizes) == 20
    assert all(abs(s.zeros[n] - 0.8 * s.sizes[n]) <= 1 for n in s.sizes)
    assert s.total == pytest.approx(0.8, abs=20 / 268_336)
    torch.save(net.state_dict(), tmp_path / "r20.pt")
    fresh = checkpoints.load(tmp_path / "r20.pt", resnet20())
    net.eval(), fresh.eval()
    X = torch.rand(2, 3, 32, 32)
    assert torch.equal(fresh(X), net(X))
    assert sparsity(fresh).zeros == s.zeros


# --- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("prune", [prune_by_percentage, global_prune_by_percentage])
@pytest.mark.parametrize("q", [-0.1, 1.5, float("nan"), 80, "0.5", None, True])
def test_bad_q_raises_and_changes_nothing(prune, q):
    net = SmallNet()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError, match=r"q must be a fraction in \[0, 1\]"):
        prune(net, q)
    assert state_equal(net.state_dict(), before) and masks(net) == {}


@pytest.mark.parametrize("prune", [prune_by_percentage, global_prune_by_percentage])
def test_nan_weights_raise_and_change_nothing(prune):
    net = SmallNet()
    with torch.no_grad():
        net.fc.weight[1, 2] = float("nan")
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError, match=r"NaN weights in layer\(s\) \['fc'\]"):
        prune(net, 0.5)
    assert masks(net) == {}
    assert all(torch.equal(net.state_dict()[k], before[k]) for k in before if "fc.weight" not in k)
    assert torch.equal(net.conv1.weight, before["conv1.weight"])


def test_no_prunable_layer_raises():
    for prune in (prune_by_percentage, global_prune_by_percentage):
        with pytest.raises(ValueError, match=r"no layer to prune \(no nn.Conv2d or nn.Linear\)"):
            prune(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), 0.5)
    with pytest.raises(ValueError, match=r"no layer to measure the sparsity of \(no nn.Conv2d"):
        sparsity(nn.Sequential(nn.ReLU()))


@pytest.mark.parametrize("kwargs, message", [
    ({"target": 1.2}, r"q must be a fraction in \[0, 1\].*got 1\.2"),
    ({"steps": 0}, r"steps must be an int >= 1.*got 0"),
    ({"steps": 2.5}, r"steps must be an int >= 1.*got 2\.5"),
    ({"scope": "net"}, r"scope must be one of \['layer', 'global'\], got 'net'"),
])
def test_iterative_pruning_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IterativePruning(**kwargs)


# --- report and plot --------------------------------------------------------------------------------

def test_table_and_plot_compare_results_side_by_side():
    import matplotlib
    matplotlib.use("Agg")
    from labkit.plots import plot_sparsity

    a, b = SmallNet(), SmallNet()
    prune_by_percentage(a, 0.5)
    global_prune_by_percentage(b, 0.3)
    results = {"layer-wise": sparsity(a), "global": sparsity(b)}
    lines = sparsity_table(results).splitlines()
    assert lines[0].split() == ["layer", "weights", "layer-wise", "global"]
    # every cell against the zeros counted here, column by column
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == LAYERS + ["total"]
    for r, name in zip(rows, LAYERS):
        w = [getattr(net, name).weight.detach() for net in (a, b)]
        assert int(r[1]) == w[0].numel()
        for cell, wk in zip(r[2:], w):
            assert float(cell.rstrip("%")) == pytest.approx(100 * int((wk == 0).sum()) / wk.numel(), abs=0.005)
    total = [sum(int((getattr(net, n).weight == 0).sum()) for n in LAYERS) / 354 for net in (a, b)]
    assert int(rows[-1][1]) == 354
    assert [float(c.rstrip("%")) for c in rows[-1][2:]] == pytest.approx([100 * t for t in total], abs=0.005)
    assert total[0] != total[1]                # the columns can tell the models apart
    assert all(a_ != b_ for a_, b_ in zip(results["layer-wise"].layers.values(), results["global"].layers.values()))
    with pytest.raises(ValueError, match="other layers"):
        sparsity_table({"a": sparsity(a), "b": Sparsity(zeros={"x": 0}, sizes={"x": 1})})
    fig = plot_sparsity(results)
    ax = fig.axes[0]
    assert len(ax.containers) == 2
    for container, s in zip(ax.containers, results.values()):
        assert [bar.get_height() for bar in container] == pytest.approx(list(s.layers.values()))


def test_zero_gradient_weights_are_those_reading_a_dead_channel():
    """A channel that is always zero after its ReLU gives the weights reading it no gradient."""
    from labkit.data import Split

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.Flatten(),
                        nn.Linear(2 * 32 * 32, 10))
    with torch.no_grad():
        net[0].weight[1].zero_()
        net[0].bias[1] = -1.0                # channel 1 is -1 before the ReLU everywhere: always 0 after
    before = copy.deepcopy(net.state_dict())
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    split = Split(images, torch.randint(0, 10, (64,)))
    zero = prune.zero_gradient_weights(net, split, batch_size=16)
    assert zero["2"].shape == net[2].weight.shape
    assert zero["2"][:, 1].all() and not zero["2"][:, [0, 2, 3]].any()   # exactly the dead channel's readers
    assert zero["0"][1].all() and not zero["0"][[0, 2, 3]].any()         # and the weights that feed it
    assert not zero["4"].any()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())   # the model is not changed
    with pytest.raises(ValueError, match="non-empty"):
        prune.zero_gradient_weights(net, split[:0])


def test_record_sparsity_refuses_a_flag_that_is_not_a_bool():
    with pytest.raises(ValueError, match="require_masks must be True or False"):
        RecordSparsity(require_masks="no")


def test_a_students_functions_may_return_numpy_or_0d_results():
    """What passes the self-checks runs in the experiments: a numpy mask, a numpy or 0-d threshold,
    a 0-d tensor from a schedule."""
    import numpy as np
    from labkit import models
    net, ref = models.resnet20(), models.resnet20()
    ref.load_state_dict(net.state_dict())
    prune.prune_by_percentage(net, 0.5, rule=lambda w, q: prune.keep_mask(w, q).numpy())
    prune.prune_by_percentage(ref, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(prune.masks(net).values(), prune.masks(ref).values()))
    g, gref = models.resnet20(), models.resnet20()
    gref.load_state_dict(g.state_dict())
    prune.global_prune_by_percentage(g, 0.6, threshold=lambda ws, q: np.float32(prune.global_threshold(ws, q).item()))
    prune.global_prune_by_percentage(gref, 0.6)
    assert abs(prune.sparsity(g).total - prune.sparsity(gref).total) < 1e-4
    step = prune.IterativePruning(0.8, 4, schedule=lambda e, s, t: torch.tensor(t * e / s))
    assert step.q(0) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="must return one number"):
        prune.global_prune_by_percentage(models.resnet20(), 0.5, threshold=lambda ws, q: [0.1, 0.2])
    with pytest.raises(ValueError, match="must return a bool tensor"):
        prune.prune_by_percentage(models.resnet20(), 0.5, rule=lambda w, q: w.abs())
