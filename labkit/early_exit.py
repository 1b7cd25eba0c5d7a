"""Lab 5 (c): early exits from ResNet-20 (Kaya et al. 2019, "Shallow-Deep Networks"; BranchyNet,
Teerapittayanon et al. 2016).

Internal classifiers. After stage 1 (16 channels, 32x32) and stage 2 (32 channels, 16x16) an
`InternalClassifier` reads the feature map: global average pooling, then one Linear layer to the 10
classes. They are trained on the frozen pretrained backbone (Kaya et al.'s IC-only training: the
backbone, and so the final classifier, is unchanged). With the backbone frozen and the head linear
after pooling, training a head is multinomial logistic regression on fixed features, so
`train_heads` computes the pooled features of the training images once (eval mode: batch-norm
running statistics, no augmentation) and fits the heads on them with Adam: a convex problem that any
sensible optimizer solves; Adam is chosen because its per-coordinate step sizes absorb the very
different scales of stage-1 and stage-2 features without a tuned learning rate per head.

The exits are numbered k = 0 .. K-1 in forward order: the internal classifiers, then the network's
own final classifier (exit K-1). For K = 3: after stage 1, after stage 2, the end.

The exit rule (`exit_rule`). An image's answer comes from the first exit whose largest softmax
probability max_c p_k(c | x) is >= tau (greater or equal: an exit whose confidence equals tau
answers); when no internal classifier is that confident, the final classifier answers, whatever its
confidence. So tau = 0 answers every image at exit 0 and tau = inf (any tau > 1) never exits early.

Expected cost (`expected_macs`). An image that leaves at exit k has paid for the backbone up to that
exit and for every internal head evaluated on the way (exits 0..k; the heads that were not confident
enough were computed too):

    E[MACs] = sum_k P(exit at k) * MACs_to_exit[k],
    MACs_to_exit[k] = MACs(stem .. stage of exit k) + sum_{j <= k} MACs(head j),

with the final exit's count = the whole network + every internal head (`macs_to_exit`, counted by
``torch.utils.flop_counter`` through ``labkit.costs.count_macs``).

Overthinking (`overthinking`), as Kaya et al. measure it: the share of images that some internal
classifier gets right and the final classifier gets wrong (the deeper network "overthought" them),
and the share already right at the first exit (the final classifier's work was wasted on them).

Real early exit (`EarlyExitNet`): the forward pass stops at the first confident exit. At batch 1
that is the latency the exit rule promises. A batch cannot stop as a whole; `EarlyExitNet` regroups
it: the images that exit leave the batch and the rest go on as a smaller batch. Both need to know,
on the host, which images exited: one host sync per internal exit, intended.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

from . import checks, stats
from .costs import count_macs
from .data import Split, batches
from .devices import model_device
from .layers import evaluating
from .models import ResNet

__all__ = ["EXITS", "InternalClassifier", "internal_classifiers", "exit_logits", "pooled_features",
           "train_heads", "exit_probs", "exit_rule", "exit_fractions", "macs_to_exit", "expected_macs",
           "Overthinking", "overthinking", "TauChoice", "choose_tau", "accuracy_at", "EarlyExitNet"]

EXITS = ("stage1", "stage2")          # where internal classifiers can sit: after these stages
_STAGES = ("stage1", "stage2", "stage3")


class InternalClassifier(nn.Module):
    """Average pooling to pool x pool cells and one Linear layer: (B, C, H, W) -> logits (B, num_classes).
    pool = 1 (the default) is global average pooling, Linear(C, num_classes); pool = 4 keeps a coarse
    4x4 map, Linear(16 C, num_classes), closer to Kaya et al.'s feature reduction (more MACs, a
    better internal classifier)."""

    def __init__(self, in_channels: int, num_classes: int = 10, pool: int = 1):
        super().__init__()
        self.pool = checks.integer("pool", pool, minimum=1)
        self.fc = nn.Linear(in_channels * self.pool ** 2, num_classes)

    def features(self, x):                  # (B, C, H, W) -> (B, C * pool * pool)
        return F.adaptive_avg_pool2d(x, self.pool).flatten(1)

    def forward(self, x):                   # (B, C, H, W)
        return self.fc(self.features(x))    # (B, num_classes)


def _check_net(net) -> ResNet:
    if not isinstance(net, ResNet):
        raise ValueError(f"early exits need a labkit.models.ResNet (e.g. models.resnet20()), got {type(net).__name__}")
    return net


def _check_exits(exits) -> tuple[str, ...]:
    exits = tuple(exits)
    if not exits or any(e not in EXITS for e in exits) or list(exits) != sorted(set(exits), key=EXITS.index):
        raise ValueError(f"exits must be a non-empty list of {EXITS}, in that order without repeats, got {exits!r}")
    return exits


def _check_heads(heads) -> nn.ModuleDict:
    if not isinstance(heads, nn.ModuleDict):
        raise ValueError(f"heads must be an nn.ModuleDict {{exit: head}} (internal_classifiers or train_heads), "
                         f"got {type(heads).__name__}")
    _check_exits(heads.keys())
    return heads


def internal_classifiers(net: ResNet, exits=EXITS, *, pool: int = 1) -> nn.ModuleDict:
    """Fresh (PyTorch-initialised) internal classifiers for ``net``, {exit: InternalClassifier(pool=pool)},
    sized from the stages' output channels, on ``net``'s device."""
    net, exits = _check_net(net), _check_exits(exits)
    width = {s: getattr(net, s)[-1].conv2.out_channels for s in _STAGES}
    return nn.ModuleDict({e: InternalClassifier(width[e], net.fc.out_features, pool) for e in exits}).to(model_device(net))


def _stem(net: ResNet, x):
    """The first steps of ``ResNet.forward``: normalisation, conv1, bn1, ReLU."""
    x = (x - net.mean) / net.std
    return F.relu(net.bn1(net.conv1(x)))    # (B, 16, 32, 32)


def _stage_outputs(net: ResNet, x):
    """Yields (stage name, feature map) for stage1, stage2, stage3, then ('final', logits)."""
    z = _stem(net, x)
    for s in _STAGES:
        z = getattr(net, s)(z)
        yield s, z
    yield "final", net.fc(z.mean(dim=(2, 3)))


def exit_logits(net: ResNet, heads: nn.ModuleDict, x: torch.Tensor) -> list[torch.Tensor]:
    """The logits of every exit on the batch ``x`` (no early stopping): the internal classifiers in
    forward order, then ``net``'s final classifier (equal to ``net(x)``): K tensors (B, num_classes)."""
    heads = _check_heads(heads)
    out = []
    for s, z in _stage_outputs(_check_net(net), x):
        if s in heads:
            out.append(heads[s](z))
        elif s == "final":
            out.append(z)
    return out


def pooled_features(net: ResNet, split: Split, exits=EXITS, *, pool: int = 1,
                    batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """{exit: (N, C pool^2) average-pooled feature maps after that stage (what `InternalClassifier`'s
    Linear layer reads; pool = 1: global average pooling)} for every image of ``split``, computed once,
    in eval mode (batch-norm running statistics), fp32, without grad, on the model's device. ``net``'s
    mode is restored."""
    net, exits = _check_net(net), _check_exits(exits)
    pool = checks.integer("pool", pool, minimum=1)
    device = model_device(net)
    out = {e: [] for e in exits}
    with evaluating(net), torch.inference_mode():
        for X, _ in batches(split.to(device), batch_size):
            for s, z in _stage_outputs(net, X):
                if s in out:
                    out[s].append(F.adaptive_avg_pool2d(z, pool).flatten(1))
                if s == exits[-1]:
                    break
    return {e: torch.cat(v) for e, v in out.items()}


def train_heads(net: ResNet, split: Split, *, exits=EXITS, pool: int = 1, epochs: int = 30, lr: float = 0.01,
                batch_size: int = 256, weight_decay: float = 0.0, seed: int = 0) -> nn.ModuleDict:
    """Internal classifiers trained on the frozen ``net`` (IC-only training): the pooled features of
    ``split`` (`pooled_features` with ``pool``, computed once) feed each head's Linear layer, trained with Adam
    (``lr``, ``weight_decay``) on the cross-entropy for ``epochs`` passes in shuffled mini-batches of
    ``batch_size`` (``seed``); no augmentation. ``net`` is not changed. Returns {exit: head} on
    ``net``'s device, in eval mode."""
    epochs = checks.integer("epochs", epochs, minimum=1)
    batch_size = checks.integer("batch_size", batch_size, minimum=1)
    lr, weight_decay = checks.number("lr", lr, positive=True), checks.number("weight_decay", weight_decay, minimum=0)
    heads = internal_classifiers(net, exits, pool=pool)
    feats = pooled_features(net, split, exits, pool=pool)
    device = model_device(net)
    labels = split.labels.to(device)
    generator = torch.Generator(device=device).manual_seed(checks.integer("seed", seed, minimum=0))
    for e, head in heads.items():
        F_e = feats[e].clone()                                   # (N, C): out of inference mode
        opt = torch.optim.Adam(head.fc.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in range(epochs):
            order = torch.randperm(len(labels), generator=generator, device=device)
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                loss = F.cross_entropy(head.fc(F_e[idx]), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return heads.eval()


def exit_probs(net: ResNet, heads: nn.ModuleDict, split: Split, *, batch_size: int = 1024):
    """(probs, labels): the softmax probabilities of every exit on every image of ``split``, a
    (K, N, num_classes) fp32 tensor on the model's device (exits in forward order, the final last),
    and the (N,) labels there; eval mode, no early stopping. Modes are restored."""
    net, heads = _check_net(net), _check_heads(heads)
    device = model_device(net)
    chunks = []
    with evaluating(net), evaluating(heads), torch.inference_mode():
        for X, _ in batches(split.to(device), batch_size):
            chunks.append(torch.stack([z.float().softmax(dim=1) for z in exit_logits(net, heads, X)]))
    return torch.cat(chunks, dim=1), split.labels.to(device)


def _tau(tau) -> float:
    if isinstance(tau, bool) or not isinstance(tau, Real) or math.isnan(tau) or tau < 0:
        raise ValueError(f"tau must be a number >= 0 (a confidence threshold; any tau > 1, e.g. math.inf, "
                         f"never exits early), got {tau!r}")
    return float(tau)


def _probs(probs_per_exit) -> torch.Tensor:
    if isinstance(probs_per_exit, (list, tuple)):
        probs_per_exit = torch.stack([torch.as_tensor(p) for p in probs_per_exit])
    p = torch.as_tensor(probs_per_exit)
    if p.dim() != 3 or p.shape[0] < 1 or not p.is_floating_point():
        raise ValueError(f"probs_per_exit must be (K, N, num_classes) float probabilities (one (N, num_classes) "
                         f"table per exit, the final classifier last), got shape {tuple(p.shape)}")
    return p


def exit_rule(probs_per_exit, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The exit each image takes and its prediction: (exits (N,) int64, predictions (N,) int64).

    ``probs_per_exit``: (K, N, num_classes) softmax probabilities, or a list of K (N, num_classes)
    tables, the exits in forward order and the final classifier last. Image n exits at the first k
    with max_c probs[k, n, c] >= tau (>=: a confidence equal to tau exits); if no internal classifier
    (k < K-1) is that confident, at k = K-1, the final classifier, whatever its confidence. The
    prediction is argmax_c probs[exit, n, c]."""
    p, tau = _probs(probs_per_exit), _tau(tau)
    confident = p.amax(dim=2) >= tau                             # (K, N)
    confident[-1] = True                                         # the final classifier always answers
    exits = confident.to(torch.int8).argmax(dim=0)               # the first True (argmax keeps the first max)
    preds = p.argmax(dim=2).gather(0, exits.unsqueeze(0)).squeeze(0)
    return exits.to(torch.int64), preds


def exit_fractions(exits: torch.Tensor, num_exits: int) -> torch.Tensor:
    """(K,) float64: the share of images that took each exit (``exits`` from `exit_rule`)."""
    num_exits = checks.integer("num_exits", num_exits, minimum=1)
    exits = torch.as_tensor(exits)
    if exits.numel() == 0:
        raise ValueError("exit_fractions: no images")
    return torch.bincount(exits.flatten().cpu(), minlength=num_exits).double() / exits.numel()


class _UpTo(nn.Module):
    """The computation an image that leaves at exit k pays for (for counting its MACs)."""

    def __init__(self, net, heads, k):
        super().__init__()
        self.net, self.heads, self.k = net, heads, k

    def forward(self, x):
        names = list(self.heads) + ["final"]
        stop, out = names[self.k], None
        for s, z in _stage_outputs(self.net, x):
            if s in self.heads and names.index(s) <= self.k:
                out = self.heads[s](z)
            if s == stop:
                return out if s != "final" else z


def macs_to_exit(net: ResNet, heads: nn.ModuleDict, input_shape=(1, 3, 32, 32)) -> list[float]:
    """MACs per image (``labkit.costs.count_macs``) an image pays when it leaves at each exit: the
    backbone up to that exit's stage plus every internal head up to and including it; the last entry
    is the whole network plus all internal heads. K numbers, increasing."""
    net, heads = _check_net(net), _check_heads(heads)
    return [count_macs(_UpTo(net, heads, k), input_shape) for k in range(len(heads) + 1)]


def expected_macs(exit_fractions, macs_to_exit) -> float:
    """E[MACs] = sum_k P(exit at k) * macs_to_exit[k]. ``exit_fractions``: K shares >= 0 summing to 1
    (`exit_fractions`); ``macs_to_exit``: K counts (`macs_to_exit`)."""
    p = [float(v) for v in torch.as_tensor(exit_fractions, dtype=torch.float64).flatten()]
    m = [checks.number("macs_to_exit", float(v), minimum=0) for v in macs_to_exit]
    if len(p) != len(m) or not p:
        raise ValueError(f"exit_fractions and macs_to_exit need one entry per exit, got {len(p)} and {len(m)}")
    if any(not math.isfinite(v) or v < 0 for v in p) or abs(sum(p) - 1) > 1e-6:
        raise ValueError(f"exit_fractions must be shares >= 0 that sum to 1 (the images that took each exit), got {p}")
    return sum(pk * mk for pk, mk in zip(p, m))


@dataclass(frozen=True)
class Overthinking:
    """Kaya et al.'s measures on n images (fractions in [0, 1])."""
    overthinking: float          # some internal classifier right, the final classifier wrong
    first_exit_right: float      # right already at the first exit
    accuracy: tuple              # per exit, the final classifier last
    n: int                       # images


def _correct(correct_per_exit) -> torch.Tensor:
    c = torch.as_tensor(correct_per_exit)
    if c.dim() != 2 or c.shape[0] < 2 or c.shape[1] < 1 or c.dtype != torch.bool:
        raise ValueError(f"correct_per_exit must be a (K, N) bool tensor (K >= 2 exits, the final last; "
                         f"e.g. probs.argmax(2) == labels), got {c.dtype} of shape {tuple(c.shape)}")
    return c


def overthinking(correct_per_exit) -> Overthinking:
    """From ``correct_per_exit`` (K, N) bool, image n right at exit k (the final classifier last):
    ``overthinking`` = mean_n [any_{k < K-1} correct[k, n] and not correct[K-1, n]],
    ``first_exit_right`` = mean_n correct[0, n], and every exit's accuracy."""
    c = _correct(correct_per_exit)
    over = (c[:-1].any(dim=0) & ~c[-1]).double().mean()
    return Overthinking(overthinking=float(over), first_exit_right=float(c[0].double().mean()),
                        accuracy=tuple(c.double().mean(dim=1).tolist()), n=c.shape[1])


def accuracy_at(probs_per_exit, labels, tau: float) -> float:
    """Top-1 accuracy of the exit rule at ``tau`` (`exit_rule`) against ``labels`` (N,)."""
    _, preds = exit_rule(probs_per_exit, tau)
    return float((preds == torch.as_tensor(labels, device=preds.device)).double().mean())


@dataclass(frozen=True)
class TauChoice:
    """What `choose_tau` chose, all measured on the validation images."""
    tau: float                   # the chosen threshold (math.inf: no early exit met the rule)
    accuracy: float              # the exit rule's accuracy at tau
    final_accuracy: float        # the final classifier's accuracy (no early exit)
    max_drop: float              # the accuracy the rule allowed to lose
    exit_fractions: tuple        # the share of images at each exit at tau
    n: int                       # validation images


DEFAULT_TAUS = tuple(round(0.5 + 0.01 * i, 2) for i in range(50)) + (0.995, 0.999, 0.9999)


def choose_tau(val_probs, val_labels, *, taus=DEFAULT_TAUS, max_drop: float | None = None) -> TauChoice:
    """The confidence threshold, chosen on validation images only: the smallest tau in ``taus`` whose
    exit-rule accuracy is >= the final classifier's accuracy - ``max_drop`` on these images. The
    smallest such tau exits most images early (lowering tau only moves images to earlier exits), so
    it saves the most MACs within the allowed loss. ``max_drop`` None: one binomial standard error of
    the final classifier's validation accuracy, sqrt(a (1 - a) / n), the noise of that accuracy.
    When no tau qualifies, tau = inf (no early exit, the final accuracy)."""
    p = _probs(val_probs)
    y = torch.as_tensor(val_labels, device=p.device)
    if y.dim() != 1 or y.numel() != p.shape[1]:
        raise ValueError(f"val_labels must be (N,) with N = {p.shape[1]} images, got shape {tuple(y.shape)}")
    n = p.shape[1]
    final = float((p[-1].argmax(dim=1) == y).double().mean())
    max_drop = stats.binomial_se(final, n) if max_drop is None else checks.number("max_drop", max_drop, minimum=0)
    candidates = sorted({_tau(t) for t in taus}) + [math.inf]
    for tau in candidates:
        acc = accuracy_at(p, y, tau)
        if acc >= final - max_drop:
            exits, _ = exit_rule(p, tau)
            return TauChoice(tau, acc, final, max_drop, tuple(exit_fractions(exits, p.shape[0]).tolist()), n)
    raise AssertionError("unreachable: tau = inf gives the final accuracy")


class EarlyExitNet(nn.Module):
    """``net`` with internal classifiers ``heads`` that really exits early, by the rule of `exit_rule`
    at threshold ``tau``.

    forward(x) -> logits (B, num_classes) of the exit that answered each image (with
    ``with_exits=True`` also the (B,) int64 exit indices). After each internal classifier the images
    whose largest softmax probability is >= tau leave; the others go on as a smaller batch
    (regrouped); when none is left the pass stops. At batch 1 the pass stops at the first confident
    exit. One host sync per internal exit (which images left), intended. Call ``.eval()`` first (the
    batch norms must use their running statistics so that an image's result does not depend on the
    others of its batch). ``net`` and ``heads`` are shared, not copied."""

    def __init__(self, net: ResNet, heads: nn.ModuleDict, tau: float):
        super().__init__()
        self.net, self.heads, self.tau = _check_net(net), _check_heads(heads), _tau(tau)

    def forward(self, x, *, with_exits: bool = False):        # x: (B, 3, H, W) in [0, 1]
        net = self.net
        fmt = torch.channels_last if (x.dim() == 4 and not x.is_contiguous()
                                      and x.is_contiguous(memory_format=torch.channels_last)) else torch.contiguous_format
        n = x.shape[0]
        rows = torch.arange(n, device=x.device)                 # which images are still in the batch
        exits = torch.full((n,), len(self.heads), dtype=torch.int64, device=x.device)
        out = None
        z = _stem(net, x)
        for s in _STAGES:
            z = getattr(net, s)(z)
            if s not in self.heads:
                continue
            k = list(self.heads).index(s)
            logits = self.heads[s](z)                           # (b, num_classes)
            if out is None:
                out = logits.new_empty((n, logits.shape[1]))
            leave = logits.float().softmax(dim=1).amax(dim=1) >= self.tau
            if bool(leave.any()):                               # the host sync: who left
                out[rows[leave]] = logits[leave].to(out.dtype)
                exits[rows[leave]] = k
                stay = ~leave
                if not bool(stay.any()):
                    return (out, exits) if with_exits else out
                rows, z = rows[stay], z[stay].contiguous(memory_format=fmt)
        logits = net.fc(z.mean(dim=(2, 3)))                     # (b, num_classes): the final classifier
        if out is None:
            out = logits.new_empty((n, logits.shape[1]))
        out[rows] = logits.to(out.dtype)
        return (out, exits) if with_exits else out
