"""Throughput of labkit's training loop against plain PyTorch, in one process.

    python benchmarks/bench_train.py                 # CPU or the GPU labkit would pick
    python benchmarks/bench_train.py --device cpu --reps 5 --images 2048

Every figure is a ratio against a baseline run in the same process, with the
repetitions of the compared loops interleaved (A B A B ...) and the median taken, so
that a machine busy with something else slows both sides alike. It prints:

1. training throughput (images/s) of ``labkit.train.train`` with its defaults (``TrainConfig``:
   precision "auto", memory format "auto") against a plain fp32 eager PyTorch loop written here
   (same model, same batch size, same images; the plain loop does no augmentation, so the ratio
   includes labkit's augmentation), and of labkit forced to fp32 and the contiguous format
   (labkit's own overhead);
2. the share of a labkit epoch spent on data: shuffling, cropping, flipping, converting;
3. evaluation throughput of ``labkit.train.evaluate`` against a plain loop;
4. a training step with 80 % of the weights masked: labkit's masks and
   ``torch.nn.utils.prune``'s reparametrisation, each against the dense model
   (timed step by step, the three interleaved, because one step is short).

Goals (README, Performance): labkit's defaults >= 1.8x plain fp32 PyTorch on a CPU with native
bf16; labkit forced to fp32 >= 0.95x; data <= 5 % of an epoch;
masked training >= 0.95x dense and at least ``torch.nn.utils.prune``'s ratio.
Uses random images unless CIFAR-10 is found (``$LABKIT_DATA``): throughput does not
depend on the pixels.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune

from labkit import prune
from labkit.data import CIFAR10, Split, batches
from labkit.devices import describe, pick_device
from labkit.latency import interleaved
from labkit.layers import prunable_layers
from labkit.models import resnet20
from labkit.train import TrainConfig, evaluate, train

SETUP = TrainConfig(epochs=1)   # the course's SGD; every training image is timed (none is held out)
FP32 = SETUP.replace(precision="fp32", memory_format="contiguous")


def sgd(net):
    return torch.optim.SGD(net.parameters(), lr=SETUP.lr, momentum=SETUP.momentum, weight_decay=SETUP.weight_decay)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_train(net, split, batch_size, seed=0) -> float:
    """The baseline: one epoch of the textbook fp32 eager loop; returns seconds."""
    opt = sgd(net)
    device = split.images.device
    g = torch.Generator(device=device).manual_seed(seed)
    net.train()
    sync(device)
    start = time.perf_counter()
    order = torch.randperm(len(split), generator=g, device=device)
    for i in range(0, len(split), batch_size):
        idx = order[i:i + batch_size]
        X, y = split.images[idx].float() / 255, split.labels[idx]
        loss = F.cross_entropy(net(X), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - start


def labkit_train(net, data, config) -> float:
    """One epoch of labkit's loop (augmentation included); its own clock of the training steps."""
    history = train(net, data, config, progress=False)
    return history.records[0]["train_time"]


def data_only(split, batch_size) -> float:
    """One epoch of labkit's data pipeline alone (shuffle, augment, convert)."""
    device = split.images.device
    g = torch.Generator(device=device).manual_seed(0)
    sync(device)
    start = time.perf_counter()
    for X, y in batches(split, batch_size, shuffle=True, augment=True, generator=g):
        pass
    sync(device)
    return time.perf_counter() - start


@torch.no_grad()
def plain_eval(net, split, batch_size=1024) -> float:
    device = split.images.device
    net.eval()
    sync(device)
    start = time.perf_counter()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for i in range(0, len(split), batch_size):
        X, y = split.images[i:i + batch_size].float() / 255, split.labels[i:i + batch_size]
        correct += (net(X).argmax(1) == y).sum()
    correct.item()
    return time.perf_counter() - start


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def medians(candidates: dict, rounds: int) -> dict:
    """Median seconds of each candidate over ``rounds`` rounds of ``labkit.latency.interleaved``
    (one warm-up call each; every round calls each candidate once, in a fresh random order)."""
    return {name: statistics.median(t) for name, t in interleaved(candidates, rounds).items()}


def train_step(net, optimizer, X, y) -> float:
    """Seconds of one training step (forward, backward, SGD update)."""
    sync(X.device)
    start = time.perf_counter()
    loss = F.cross_entropy(net(X), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    sync(X.device)
    return time.perf_counter() - start


def load_images(n_train, n_test, device):
    try:
        from labkit.data import cifar10
        data = cifar10(download=False, verbose=False)
        train_split, test_split = data.train[:n_train], data.test[:n_test]
        source = "CIFAR-10"
    except (FileNotFoundError, OSError):
        g = torch.Generator().manual_seed(0)
        make = lambda n: Split(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                               torch.randint(0, 10, (n,), generator=g))
        train_split, test_split, source = make(n_train), make(n_test), "random images"
    return CIFAR10(train_split.to(device), test_split.to(device), [str(i) for i in range(10)]), source


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="default: what labkit picks (CUDA, MPS, CPU)")
    parser.add_argument("--images", type=int, default=2048, help="training images per timed epoch")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--reps", type=int, default=7, help="interleaved epochs per loop, for the training, data and evaluation figures")
    parser.add_argument("--steps", type=int, default=30, help="interleaved training steps per variant, for the masked-training figure")
    args = parser.parse_args()
    device = pick_device(args.device)
    data, source = load_images(args.images, 1017, device)
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    config, fp32 = SETUP.replace(batch_size=args.batch_size), FP32.replace(batch_size=args.batch_size)
    print(f"labkit's defaults run here as: {describe(config, device)}")
    print(f"device {device}{threads}; torch {torch.__version__}; ResNet-20, batch {args.batch_size}, "
          f"{len(data.train)} {source} per epoch; medians of {args.reps} interleaved epochs "
          f"and {args.steps} interleaved steps\n")
    n = len(data.train)

    # 1-2. The training loop and its data pipeline.
    torch.manual_seed(0)
    base = resnet20().to(device)
    nets = {"plain": copy.deepcopy(base), "labkit": copy.deepcopy(base), "fp32": copy.deepcopy(base)}
    t = medians({
        "plain": lambda: plain_train(nets["plain"], data.train, args.batch_size),
        "labkit": lambda: labkit_train(nets["labkit"], data, config),
        "fp32": lambda: labkit_train(nets["fp32"], data, fp32),
        "data": lambda: data_only(data.train, args.batch_size),
    }, args.reps)
    print(f"training     plain fp32 PyTorch {n / t['plain']:6.0f} img/s   labkit ({describe(config, device)}) "
          f"{n / t['labkit']:6.0f} img/s   ratio {t['plain'] / t['labkit']:.3f}x   (goal >= 1.8x with native bf16)")
    print(f"training     plain fp32 PyTorch {n / t['plain']:6.0f} img/s   labkit forced to fp32, contiguous "
          f"{n / t['fp32']:6.0f} img/s   ratio {t['plain'] / t['fp32']:.3f}x   (goal >= 0.95x)")
    print(f"data share   shuffle + augment + convert = {t['data'] / t['labkit']:.1%} of labkit's epoch"
          f"   (goal <= 5 %)")

    # 3. Evaluation.
    m = len(data.test)
    t = medians({
        "plain": lambda: plain_eval(base, data.test),
        "labkit": lambda: timed(lambda: evaluate(base, data.test)),
    }, args.reps)
    print(f"evaluation   plain PyTorch {m / t['plain']:8.0f} img/s   labkit {m / t['labkit']:8.0f} img/s"
          f"   ratio {t['plain'] / t['labkit']:.3f}x")

    # 4. One training step with 80 % of the weights masked, step by step (many short samples).
    masked = copy.deepcopy(base)
    prune.prune_by_percentage(masked, 0.8)
    reparam = copy.deepcopy(base)
    for _, layer in prunable_layers(reparam):
        torch_prune.l1_unstructured(layer, "weight", amount=0.8)
    nets = {"dense": copy.deepcopy(base), "labkit": masked, "torch": reparam}
    opts = {k: sgd(v) for k, v in nets.items()}
    X, y = data.train.images[:args.batch_size].float() / 255, data.train.labels[:args.batch_size]
    t = medians({k: (lambda k=k: train_step(nets[k], opts[k], X, y)) for k in nets}, args.steps)
    b = args.batch_size
    print(f"80 % masked  dense {b / t['dense']:8.0f} img/s   labkit masks {b / t['labkit']:8.0f} img/s"
          f" ({t['dense'] / t['labkit']:.3f}x dense)   torch.nn.utils.prune {b / t['torch']:8.0f} img/s"
          f" ({t['dense'] / t['torch']:.3f}x dense)   (goal >= 0.95x and >= torch's)")

if __name__ == "__main__":
    main()
