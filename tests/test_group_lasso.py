"""L1 and Group Lasso (labkit.group_lasso): the block soft threshold against a direct minimisation of
its proximal problem, the penalty against a hand count, exact zero groups from the proximal step and
never from the subgradient, the callbacks inside labkit.train, near-zero counts."""
import math

import numpy as np
import pytest
import scipy.optimize
import torch

from labkit import group_lasso as gl
from labkit import prune, structured
from labkit.data import CIFAR10, Split
from labkit.models import ResNet
from labkit.train import TrainConfig, train


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny tensors (conftest.py)


def _tiny(seed=0, inner=(3, 2, 2)) -> ResNet:
    """A ResNet of one block per stage with a few inner channels and random batch-norm parameters."""
    torch.manual_seed(seed)
    net = ResNet((1, 1, 1), inner=inner)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net


def _group_vectors(net) -> dict[tuple[str, int], np.ndarray]:
    """Every group's weights as one float64 vector, built by hand from the modules."""
    out = {}
    for name, b in structured.blocks(net):
        for k in range(b.conv1.out_channels):
            parts = [b.conv1.weight[k].flatten(), b.bn1.weight[k:k + 1], b.bn1.bias[k:k + 1],
                     b.conv2.weight[:, k].flatten()]
            out[name, k] = torch.cat(parts).detach().double().numpy()
    return out


def _direct_prox(v: np.ndarray, t: float) -> np.ndarray:
    """argmin_x 1/2 ||x - v||^2 + t ||x||_2 by numerical minimisation, from two starts (v and 0);
    the objective is not smooth at 0, so Powell (no gradients) is used."""
    f = lambda x: 0.5 * np.sum((x - v) ** 2) + t * np.linalg.norm(x)
    best = min((scipy.optimize.minimize(f, x0, method="Powell", options={"xtol": 1e-10, "ftol": 1e-14,
                                                                           "maxfev": 200000})
                for x0 in (v.copy(), np.zeros_like(v))), key=lambda r: r.fun)
    return best.x


def _line_prox(v: np.ndarray, t: float) -> np.ndarray:
    """The same minimum by a fine 1-D search of x = s v / ||v|| over s in [0, ||v||]."""
    n = np.linalg.norm(v)
    if n == 0:
        return np.zeros_like(v)
    s = np.linspace(0, n, 200001)
    obj = 0.5 * (s - n) ** 2 + t * s
    return s[np.argmin(obj)] * v / n


@pytest.mark.parametrize("case", range(6))
def test_block_soft_threshold_solves_the_proximal_problem(case):
    rng = np.random.default_rng(case)
    d = [1, 2, 3, 5, 4, 3][case]
    v = rng.normal(size=d)
    t = [0.3, 0.5 * np.linalg.norm(v), 2.0 * np.linalg.norm(v), 0.1, np.linalg.norm(v), 0.0][case]
    ours = gl.block_soft_threshold(torch.tensor(v), t).numpy()
    direct = _direct_prox(v, t)
    f = lambda x: 0.5 * np.sum((x - v) ** 2) + t * np.linalg.norm(x)
    assert f(ours) <= f(direct) + 1e-9
    np.testing.assert_allclose(ours, direct, atol=1e-4)
    np.testing.assert_allclose(ours, _line_prox(v, t), atol=1e-4 * max(1, np.linalg.norm(v)))


def test_block_soft_threshold_is_not_the_elementwise_one():
    """A group above the threshold keeps every entry non-zero, small ones included; the element-wise
    soft threshold would zero the small entry (and is not the minimiser)."""
    v = np.array([3.0, 0.2, -1.0])
    t = 0.5
    ours = gl.block_soft_threshold(torch.tensor(v), t).numpy()
    elementwise = np.sign(v) * np.maximum(np.abs(v) - t, 0)
    assert np.all(ours != 0)
    assert not np.allclose(ours, elementwise, atol=1e-3)
    np.testing.assert_allclose(ours, _direct_prox(v, t), atol=1e-4)


def test_block_soft_threshold_at_and_below_the_threshold_and_at_zero():
    v = torch.tensor([3.0, 4.0], dtype=torch.float64)          # ||v|| = 5
    assert torch.equal(gl.block_soft_threshold(v, 5.0), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(gl.block_soft_threshold(v, 7.0), torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(gl.block_soft_threshold(v, 4.0), v / 5)
    zero = gl.block_soft_threshold(torch.zeros(3), 0.0)
    assert torch.equal(zero, torch.zeros(3))                  # no 0/0
    with pytest.raises(ValueError):
        gl.block_soft_threshold(v, -1.0)


def test_groups_and_their_sizes():
    net = _tiny()
    gs = gl.groups(net)
    assert [g.name for g in gs] == ["stage1.0", "stage2.0", "stage3.0"]
    # |g| = 9 C_in + 2 + 9 C_out: conv1's filter, bn1's scale and shift, conv2's input slice
    assert [g.size for g in gs] == [9 * 16 + 2 + 9 * 16, 9 * 16 + 2 + 9 * 32, 9 * 32 + 2 + 9 * 64]
    assert [g.count for g in gs] == [3, 2, 2]
    full = gl.groups(ResNet())
    assert sum(g.count for g in full) == 3 * 16 + 3 * 32 + 3 * 64
    assert sorted({g.size for g in full}) == [290, 434, 578, 866, 1154]
    vectors = _group_vectors(net)
    for g in gs:
        norms = g.norms().detach().double().numpy()
        np.testing.assert_allclose(norms, [np.linalg.norm(vectors[g.name, k]) for k in range(g.count)], rtol=1e-6)


def test_penalty_against_a_hand_count():
    net = _tiny()
    lam = 0.01
    hand = lam * sum(math.sqrt(v.size) * np.linalg.norm(v) for v in _group_vectors(net).values())
    p = gl.penalty(net, lam)
    assert p.requires_grad
    assert p.item() == pytest.approx(hand, rel=1e-6)
    without_sqrt = lam * sum(np.linalg.norm(v) for v in _group_vectors(net).values())
    assert not p.item() == pytest.approx(without_sqrt, rel=1e-2)


def test_prox_step_is_block_soft_thresholding_of_every_group():
    net = _tiny()
    before = _group_vectors(net)
    # a threshold that zeroes some groups and shrinks the others
    lr, lam = 0.1, float(np.median([np.linalg.norm(v) / math.sqrt(v.size) for v in before.values()])) / 0.1
    gl.prox_step(net, lr, lam)
    after = _group_vectors(net)
    zeroed = 0
    for key, v in before.items():
        t = lr * lam * math.sqrt(v.size)
        np.testing.assert_allclose(after[key], _line_prox(v, t), atol=1e-5 * max(1, np.linalg.norm(v)))
        expected = max(0.0, 1 - t / np.linalg.norm(v)) * v
        np.testing.assert_allclose(after[key], expected, rtol=1e-5, atol=1e-7)
        if np.linalg.norm(v) <= t:
            assert np.all(after[key] == 0)
            zeroed += 1
        # the mistakes the test must catch give other weights here
        no_sqrt = max(0.0, 1 - lr * lam / np.linalg.norm(v)) * v
        elementwise = np.sign(v) * np.maximum(np.abs(v) - t, 0)
        assert not np.allclose(after[key], no_sqrt, rtol=1e-3, atol=1e-6)
        assert not np.allclose(after[key], elementwise, rtol=1e-3, atol=1e-6) or np.all(after[key] == 0)
    assert 0 < zeroed < len(before)
    assert sum(gl.zero_groups(net).values()) == zeroed


def test_prox_step_leaves_a_zero_group_zero_and_finite():
    net = _tiny()
    b = net.stage2[0]
    with torch.no_grad():
        b.conv1.weight[1] = 0
        b.bn1.weight[1] = 0
        b.bn1.bias[1] = 0
        b.conv2.weight[:, 1] = 0
    assert gl.zero_groups(net) == {"stage1.0": 0, "stage2.0": 1, "stage3.0": 0}
    gl.prox_step(net, 0.01, 1e-4)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert gl.zero_groups(net)["stage2.0"] == 1
    net.zero_grad()
    gl.subgradient(net, 0.1)
    assert torch.equal(b.conv2.weight.grad[:, 1], torch.zeros_like(b.conv2.weight.grad[:, 1]))
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_subgradient_against_autograd_of_the_penalty():
    net = _tiny()
    b = net.stage1[0]
    with torch.no_grad():                          # one zero group: both give 0 there, not NaN
        b.conv1.weight[2] = 0
        b.bn1.weight[2] = 0
        b.bn1.bias[2] = 0
        b.conv2.weight[:, 2] = 0
    lam = 0.03
    gl.penalty(net, lam).backward()
    expected = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    gl.subgradient(net, lam)
    got = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert sorted(got) == sorted(expected)
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-5, atol=1e-8)
    assert torch.equal(b.conv1.weight.grad[2], torch.zeros_like(b.conv1.weight[2]))


def _sgd_run(net, lam, how, steps=30, lr=0.05):
    """Plain SGD on a few random images with Group Lasso by `how`; returns the zero groups per step."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.rand(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    zeros = []
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        if how == "subgradient":
            gl.subgradient(net, lam)
        opt.step()
        if how == "prox":
            gl.prox_step(net, lr, lam)
        zeros.append(sum(gl.zero_groups(net).values()))
    return zeros


def test_the_subgradient_never_makes_a_zero_group_the_prox_does():
    lam = 0.2         # large: several groups' norms are below lr * lam * sqrt(|g|) within a few steps
    prox = _sgd_run(_tiny(), lam, "prox")
    sub = _sgd_run(_tiny(), lam, "subgradient")
    assert prox[-1] > 0
    assert max(sub) == 0
    # the subgradient did shrink the groups, near zero but not to it
    net = _tiny()
    start = torch.cat(list(gl.group_norms(net).values()))
    _sgd_run(net, lam, "subgradient")
    assert torch.cat(list(gl.group_norms(net).values())).median() < 0.5 * start.median()


def _tiny_data(n=16, size=8):
    g = torch.Generator().manual_seed(0)
    split = lambda m: Split(torch.randint(0, 256, (m, 3, size, size), dtype=torch.uint8, generator=g),
                            torch.randint(0, 10, (m,), generator=g))
    return CIFAR10(train=split(n), test=split(8), classes=[str(i) for i in range(10)])


CONFIG = TrainConfig(epochs=2, batch_size=8, augment=False, precision="fp32", momentum=0.0, weight_decay=0.0,
                     lr=0.05)


def test_callbacks_run_inside_train_with_the_optimizers_lr():
    net = _tiny()
    seen = []

    class Spy(gl.ProximalGroupLasso):
        def on_step_end(self, net):
            seen.append(self._lr(gl.groups(net)[0].conv1))
            super().on_step_end(net)

    opt = torch.optim.SGD(net.parameters(), lr=0.03)          # not the config's 0.05: the optimizer's counts
    history = train(net, _tiny_data(), CONFIG, callbacks=[Spy(2.0)], optimizer=opt, progress=False)
    assert seen == [0.03] * 4
    assert history.records[-1]["zero_groups"] == sum(gl.zero_groups(net).values()) > 0
    net = _tiny()
    cb = gl.GroupLassoSubgradient(1.0)
    history = train(net, _tiny_data(), CONFIG, callbacks=[cb], progress=False)
    assert history.records[-1]["zero_groups"] == 0
    assert cb.handle is None                    # the optimizer hook was removed at the end


def test_subgradient_callback_adds_to_the_gradient_before_the_step():
    """One step of train with the callback equals one manual SGD step on loss + penalty."""
    data = _tiny_data(n=8)
    net, ref = _tiny(), _tiny()
    train(net, data, CONFIG.replace(epochs=1), callbacks=[gl.GroupLassoSubgradient(0.02)], progress=False)
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    X = data.train.images.float() / 255
    ref.train()
    (torch.nn.functional.cross_entropy(ref(X), data.train.labels) + gl.penalty(ref, 0.02)).backward()
    opt.step()
    for (n, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=n)


def test_proximal_callback_steps_with_the_optimizers_lr():
    """One step of train with the callback equals one manual SGD step at the optimizer's lr, then
    prox_step at that lr (not the config's)."""
    data = _tiny_data(n=8)
    net, ref = _tiny(), _tiny()
    opt = torch.optim.SGD(net.parameters(), lr=0.03)
    train(net, data, CONFIG.replace(epochs=1), callbacks=[gl.ProximalGroupLasso(0.5)], optimizer=opt, progress=False)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.03)
    ref.train()
    torch.nn.functional.cross_entropy(ref(data.train.images.float() / 255), data.train.labels).backward()
    ref_opt.step()
    gl.prox_step(ref, 0.03, 0.5)
    for (n, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=n)


# --- L1 ---------------------------------------------------------------------------------------------

def test_l1_prox_is_soft_thresholding_and_keeps_masks():
    net = _tiny()
    prune.prune_by_percentage(net, 0.5, layers=["stage1.0.conv1"])
    layer = net.stage1[0].conv1
    before = {n: m.weight.detach().clone() for n, m in [("fc", net.fc), ("stage1.0.conv1", layer)]}
    from labkit.layers import original
    mask = prune.masks(net)["stage1.0.conv1"]
    with torch.no_grad():
        original(layer)[~mask] = 0.5       # as a momentum buffer may move them: the mask must still hold
    t = 0.02
    gl.l1_prox_step(net, 0.1, t / 0.1)
    for n, m in [("fc", net.fc), ("stage1.0.conv1", layer)]:
        w = before[n].numpy()
        np.testing.assert_allclose(m.weight.detach().numpy(), np.sign(w) * np.maximum(np.abs(w) - t, 0), atol=1e-7)
    assert torch.all(original(layer)[~mask] == 0)


def test_l1_subgradient_and_callbacks():
    net = _tiny()
    prune.prune_by_percentage(net, 0.5, layers=["fc"])
    from labkit.layers import original
    w = original(net.fc)
    with torch.no_grad():
        w[~prune.masks(net)["fc"]] = -0.5            # drifted off zero (momentum): still no penalty there
    net.zero_grad(set_to_none=True)
    gl.l1_subgradient(net, 0.1)
    torch.testing.assert_close(w.grad, 0.1 * torch.sign(w) * prune.masks(net)["fc"])
    torch.testing.assert_close(net.conv1.weight.grad, 0.1 * torch.sign(net.conv1.weight))
    # proximal L1 inside train gives exact zeros; the subgradient does not
    lam = 0.5
    prox, sub = _tiny(), _tiny()
    train(prox, _tiny_data(), CONFIG, callbacks=[gl.L1Proximal(lam)], progress=False)
    train(sub, _tiny_data(), CONFIG, callbacks=[gl.L1Subgradient(lam)], progress=False)
    assert gl.near_zero(prox)["total"]["zeros"] > 0.1 * gl.near_zero(prox)["total"]["weights"]
    assert gl.near_zero(sub)["total"]["zeros"] == 0


def test_near_zero_counts():
    net = _tiny()
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.weight[0, :4] = torch.tensor([1e-5, -5e-4, 5e-3, 0.25])
    counts = gl.near_zero(net, thresholds=(1e-4, 1e-3, 1e-2, 0.25))
    assert counts["fc"] == {"weights": 640, "zeros": 636, 1e-4: 637, 1e-3: 638, 1e-2: 639, 0.25: 639}  # 0.25 is not < 0.25
    assert counts["conv1"]["weights"] == net.conv1.weight.numel()
    assert counts["total"]["weights"] == sum(r["weights"] for k, r in counts.items() if k != "total")
    assert counts["conv1"][1e-2] == int((net.conv1.weight.abs() < 1e-2).sum())
    assert "fc" in gl.near_zero_table(counts)
