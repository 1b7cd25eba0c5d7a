"""Early exits (labkit.early_exit): the exit rule on hand-made probability tables (>=, the first
confident exit, the fallback to the final classifier), expected MACs against a hand count, the
early-exit network against the exit rule, batch regrouping against one image at a time."""
import math

import pytest
import torch

from labkit import early_exit as ee
from labkit import models
from labkit.data import Split
from labkit.models import ResNet
from labkit.train import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny tensors (conftest.py)


# Three exits (two internal, the final), four images, three classes. Confidences (max prob):
#   image 0: 0.75, 0.5,  0.5    -> exit 0 at tau = 0.75 (equal counts: >=)
#   image 1: 0.5,  0.75, 0.875  -> exit 1: the first confident one, not the last
#   image 2: 0.5,  0.5,  0.375  -> exit 2: none confident, the final answers anyway
#   image 3: 0.875, 1.0, 1.0    -> exit 0: not the last (or most) confident exit
P = torch.tensor([
    # exit 0, images 0..3
    [[0.75, 0.125, 0.125], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5], [0.0625, 0.875, 0.0625]],
    # exit 1
    [[0.5, 0.25, 0.25], [0.125, 0.125, 0.75], [0.25, 0.5, 0.25], [0.0, 0.0, 1.0]],
    # the final classifier
    [[0.25, 0.5, 0.25], [0.0625, 0.0625, 0.875], [0.375, 0.3125, 0.3125], [1.0, 0.0, 0.0]],
])


def test_exit_rule_on_a_hand_made_table():
    exits, preds = ee.exit_rule(P, 0.75)
    assert exits.tolist() == [0, 1, 2, 0]
    assert preds.tolist() == [0, 2, 0, 1]
    exits, preds = ee.exit_rule(list(P), 0.8)                          # a list of tables works too
    assert exits.tolist() == [2, 2, 2, 0]                              # 0.75 < 0.8: not confident
    assert preds.tolist() == [1, 2, 0, 1]


def test_exit_rule_extremes():
    assert ee.exit_rule(P, 0.0)[0].tolist() == [0, 0, 0, 0]
    assert ee.exit_rule(P, 1.0)[0].tolist() == [2, 2, 2, 1]            # image 3 is certain at exit 1: >=
    exits, preds = ee.exit_rule(P, math.inf)
    assert exits.tolist() == [2, 2, 2, 2]
    assert preds.tolist() == P[-1].argmax(1).tolist()
    for bad in (-0.1, math.nan, True, "0.5"):
        with pytest.raises(ValueError, match="tau"):
            ee.exit_rule(P, bad)
    with pytest.raises(ValueError, match="K, N"):
        ee.exit_rule(P[0], 0.5)


def test_exit_fractions_and_expected_macs_by_hand():
    exits, _ = ee.exit_rule(P, 0.75)
    fractions = ee.exit_fractions(exits, 3)
    assert fractions.tolist() == [0.5, 0.25, 0.25]
    assert ee.expected_macs(fractions, [10.0, 20.0, 40.0]) == pytest.approx(0.5 * 10 + 0.25 * 20 + 0.25 * 40)
    assert ee.expected_macs([0, 0, 1], [10, 20, 40]) == 40
    with pytest.raises(ValueError, match="sum to 1"):
        ee.expected_macs([0.5, 0.25, 0.5], [10, 20, 40])
    with pytest.raises(ValueError, match="one entry per exit"):
        ee.expected_macs([0.5, 0.5], [10, 20, 40])


def test_macs_to_exit_of_resnet20_by_hand():
    net = models.resnet20()
    heads = ee.internal_classifiers(net)
    hw = {1: 32 * 32, 2: 16 * 16, 3: 8 * 8}
    stem = 3 * 16 * 9 * hw[1]
    stage1 = 6 * 16 * 16 * 9 * hw[1]
    stage2 = (16 * 32 + 5 * 32 * 32) * 9 * hw[2]
    stage3 = (32 * 64 + 5 * 64 * 64) * 9 * hw[3]
    head1, head2, fc = 16 * 10, 32 * 10, 64 * 10
    expected = [stem + stage1 + head1, stem + stage1 + head1 + stage2 + head2,
                stem + stage1 + stage2 + stage3 + fc + head1 + head2]
    assert ee.macs_to_exit(net, heads) == expected
    assert expected[-1] - head1 - head2 == 40_551_040
    # heads on a 4x4 pooled map: Linear(16 C, 10)
    assert ee.macs_to_exit(net, ee.internal_classifiers(net, pool=4))[0] == stem + stage1 + 16 * 16 * 10


@pytest.mark.parametrize("pool", [1, 2])
def test_heads_are_trained_on_the_features_they_read(pool):
    """What train_heads fits (pooled_features) is what the head computes inside the network."""
    net, _ = _tiny()
    split = _separable_split(n=16)
    heads = ee.train_heads(net, split, pool=pool, epochs=2)
    assert heads["stage2"].fc.in_features == 32 * pool * pool
    feats = ee.pooled_features(net, split, pool=pool)
    with torch.no_grad():
        logits = ee.exit_logits(net, heads, split.images.float() / 255)
        for k, e in enumerate(ee.EXITS):
            torch.testing.assert_close(heads[e].fc(feats[e]), logits[k], rtol=1e-5, atol=1e-5)


def test_overthinking_by_hand():
    correct = torch.tensor([[True, False, True, False, False],     # exit 0
                            [False, True, True, False, True],      # exit 1
                            [False, False, True, True, True]])     # final
    o = ee.overthinking(correct)
    assert o.overthinking == pytest.approx(2 / 5)      # images 0, 1: right early, wrong at the end
    assert o.first_exit_right == pytest.approx(2 / 5)
    assert o.accuracy == pytest.approx((2 / 5, 3 / 5, 3 / 5))
    assert o.n == 5
    with pytest.raises(ValueError, match="bool"):
        ee.overthinking(correct.int())


def test_choose_tau_takes_the_smallest_tau_within_the_allowed_drop():
    labels = torch.tensor([1, 2, 0, 0])            # the final classifier is right on all four
    taus = (0.5, 0.7, 0.75, 0.8, 0.9)
    # accuracy of the rule: 0.5 -> 0, 0.7 and 0.75 -> 1/2, 0.8 -> 3/4, 0.9 -> 3/4, inf -> 1
    assert [ee.accuracy_at(P, labels, t) for t in taus + (math.inf,)] == [0, 0.5, 0.5, 0.75, 0.75, 1]
    choice = ee.choose_tau(P, labels, taus=taus, max_drop=0.25)
    assert choice.tau == 0.8 and choice.accuracy == 0.75 and choice.final_accuracy == 1.0
    assert choice.exit_fractions == (0.25, 0.0, 0.75) and choice.n == 4
    assert ee.choose_tau(P, labels, taus=taus, max_drop=0.5).tau == 0.7
    assert ee.choose_tau(P, labels, taus=taus, max_drop=0.0).tau == math.inf      # no early exit
    assert ee.choose_tau(P, labels, taus=(0.9, 0.8, 0.5), max_drop=0.25).tau == 0.8   # any order of taus
    # default max_drop: one standard error of the final accuracy on these images
    labels = torch.tensor([1, 2, 0, 1])            # the final classifier: 3 of 4
    assert ee.choose_tau(P, labels, taus=taus).max_drop == pytest.approx(math.sqrt(0.75 * 0.25 / 4))


# --- a tiny random network ----------------------------------------------------------------------------

def _tiny(seed=0):
    torch.manual_seed(seed)
    net = ResNet((1, 1, 1), inner=(4, 4, 4))
    heads = ee.internal_classifiers(net)
    with torch.no_grad():
        for m in list(net.modules()) + list(heads.modules()):
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        heads["stage1"].fc.weight.mul_(15)         # spread the confidences of the exits over (0, 1)
        heads["stage2"].fc.weight.mul_(8)
    return net.eval(), heads.eval()


def _x(n=64, seed=1):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _tau_between(conf: torch.Tensor) -> float:
    """A tau far from every confidence (so that rounding cannot move an image), near their median."""
    s = conf.flatten().sort().values
    gaps = s[1:] - s[:-1]
    mid = len(s) // 2
    i = mid - 8 + int(gaps[mid - 8: mid + 8].argmax())
    return float((s[i] + s[i + 1]) / 2)


def _tau_for_every_exit(probs: torch.Tensor) -> float:
    """A tau at which every exit answers some images, far from every internal confidence (rounding
    in another batch size cannot move an image across it)."""
    s = probs[:-1].amax(2).flatten().sort().values
    best = None
    for lo, hi in zip(s[:-1].tolist(), s[1:].tolist()):
        tau = (lo + hi) / 2
        counts = ee.exit_rule(probs, tau)[0].bincount(minlength=3)
        if hi - lo > 1e-4 and bool((counts >= 5).all()) and (best is None or hi - lo > best[0]):
            best = (hi - lo, tau)
    assert best is not None, "no tau uses every exit: change the tiny network's scales"
    return best[1]


def test_exit_logits_end_with_the_network_itself():
    net, heads = _tiny()
    x = _x()
    logits = ee.exit_logits(net, heads, x)
    assert [t.shape for t in logits] == [(64, 10)] * 3
    with torch.no_grad():
        torch.testing.assert_close(logits[-1], net(x), rtol=0, atol=0)


def test_early_exit_net_equals_the_exit_rule_and_regrouping_equals_one_image_at_a_time():
    net, heads = _tiny()
    x = _x()
    with torch.no_grad():
        logits = ee.exit_logits(net, heads, x)
        probs = torch.stack([z.softmax(1) for z in logits])
        tau = _tau_for_every_exit(probs)
        exits, preds = ee.exit_rule(probs, tau)
        assert set(exits.tolist()) == {0, 1, 2}           # every exit is taken by some image
        model = ee.EarlyExitNet(net, heads, tau).eval()
        out, got_exits = model(x, with_exits=True)
        assert torch.equal(got_exits, exits)
        assert torch.equal(out.argmax(1), preds)
        answered = torch.stack(logits)[exits, torch.arange(64)]
        torch.testing.assert_close(out, answered, rtol=1e-5, atol=1e-5)
        single = [model(x[i:i + 1], with_exits=True) for i in range(64)]
        torch.testing.assert_close(out, torch.cat([o for o, _ in single]), rtol=1e-5, atol=1e-5)
        assert torch.equal(got_exits, torch.cat([e for _, e in single]))
        assert torch.equal(model(x), out)


def test_at_batch_one_the_pass_really_stops():
    net, heads = _tiny()
    calls = []
    for s in ("stage2", "stage3"):
        getattr(net, s).register_forward_hook(lambda m, i, o, s=s: calls.append(s))
    x = _x(1)
    with torch.no_grad():
        _, e = ee.EarlyExitNet(net, heads, 0.0)(x, with_exits=True)   # exit 0 is always confident enough
        assert e.tolist() == [0] and calls == []
        _, e = ee.EarlyExitNet(net, heads, math.inf)(x, with_exits=True)
        assert e.tolist() == [2] and calls == ["stage2", "stage3"]
        calls.clear()
        conf = float(ee.exit_logits(net, heads, x)[0].softmax(1).amax())
        _, e = ee.EarlyExitNet(net, heads, conf)(x, with_exits=True)          # confidence == tau: it exits
        assert e.tolist() == [0]


def _separable_split(n=64, seed=0):
    """Images whose class is their brightness decile: internal classifiers can learn it."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = (labels.view(n, 1, 1, 1) * 25 + torch.randint(0, 10, (n, 3, 8, 8), generator=g)).to(torch.uint8)
    return Split(images, labels)


def test_train_heads_leaves_the_backbone_and_learns():
    net, _ = _tiny()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    split = _separable_split()
    untrained = ee.internal_classifiers(net)
    heads = ee.train_heads(net, split, epochs=200, lr=0.05, batch_size=32)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    probs, labels = ee.exit_probs(net, heads, split)
    probs0, _ = ee.exit_probs(net, untrained, split)
    assert probs.shape == (3, 64, 10)
    acc = (probs.argmax(2) == labels).double().mean(1)
    acc0 = (probs0.argmax(2) == labels).double().mean(1)
    assert acc[0] > acc0[0] + 0.2 and acc[1] > acc0[1] + 0.2
    assert acc[2] == acc0[2]                               # the final classifier is the network's own
    with pytest.raises(ValueError, match="exits"):
        ee.internal_classifiers(net, ("stage2", "stage1"))


def test_pretrained_resnet20_exits(data_root):
    """The published ResNet-20 on 300 test images with heads trained on 1000 training images: the
    final exit is the network's own answer, the heads beat chance, the early-exit net follows the rule."""
    from labkit import data as labdata

    cifar = labdata.cifar10(root=data_root, download=False, verbose=False)
    net = models.resnet20(pretrained=True, root=data_root).eval()
    heads = ee.train_heads(net, cifar.train[:1000], epochs=30)
    test = cifar.test[:300]
    probs, labels = ee.exit_probs(net, heads, test)
    acc = (probs.argmax(2) == labels).double().mean(1)
    assert acc[2] > 0.8 and acc[1] > 0.3 and acc[0] > 0.2
    tau = _tau_between(probs[:-1].amax(2))
    exits, preds = ee.exit_rule(probs, tau)
    X = test.images.float() / 255
    with torch.no_grad():
        out, got = ee.EarlyExitNet(net, heads, tau)(X, with_exits=True)
    assert torch.equal(got, exits) and torch.equal(out.argmax(1), preds)
    # labkit's evaluate (channels_last, inference mode) runs it as any model: the exit rule's accuracy
    assert evaluate(ee.EarlyExitNet(net, heads, tau), test) == ee.accuracy_at(probs, labels, tau)
    macs = ee.macs_to_exit(net, heads)
    assert macs[0] < macs[1] < macs[2]
    assert ee.expected_macs(ee.exit_fractions(exits, 3), macs) < macs[2]
