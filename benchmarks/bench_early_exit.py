"""Lab 5's structured and early-exit latencies: a Group-Lasso-shaped network and early exit, in one process.

    python benchmarks/bench_early_exit.py                 # CPU or the GPU labkit would pick
    python benchmarks/bench_early_exit.py --device cpu --rounds 7 --images 256

Needs CIFAR-10 and the pretrained checkpoint (``$LABKIT_DATA``): whether an image exits early
depends on its pixels and on trained internal classifiers, so random inputs would measure nothing.

1. Structured: the pretrained ResNet-20 with half of every block's inner channels removed
   (``structured.prune_channels``, the shape a Group Lasso run leaves after
   ``structured.remove_zero_channels``) against the dense network, by ``latency.measure``
   (interleaved rounds, medians and quartiles), beside the ratio of their MACs.
2. Early exit: internal classifiers after stages 1 and 2 (pool 4, trained here on the frozen
   backbone's features of the first 1024 training images), ``early_exit.EarlyExitNet`` at
   ``--tau`` against the full network on the same test images: one image per forward pass
   (each stops at its first confident exit) and the whole batch at once (regrouped after each
   exit), per image, in interleaved rounds, with the expected MAC ratio of the exits taken.

Every figure is a ratio against the dense network timed in the same process, in the same rounds.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from labkit import costs, data, devices, early_exit, latency, models, structured


def per_image(net, images, batch: int):
    """A candidate for ``latency.interleaved``: seconds per image to run ``images`` in batches of ``batch``."""
    def run() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                net(images[i:i + batch])
        if images.is_cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / len(images)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: labkit's pick)")
    parser.add_argument("--tau", type=float, default=0.9, help="the exit threshold (Lab 5 chooses it on validation)")
    parser.add_argument("--images", type=int, default=256, help="test images timed")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--keep", type=float, default=0.5, help="fraction of every block's inner channels kept")
    args = parser.parse_args(argv)

    device = devices.pick_device(args.device)
    cifar = data.cifar10()
    dense = models.resnet20(pretrained=True, download=False).to(device).eval()
    print(latency.machine_load())
    print(f"device: {device}; torch {torch.__version__}; {torch.get_num_threads()} threads")

    small = structured.prune_channels(dense, args.keep).to(device).eval()
    timings = latency.measure({"dense": dense, "channels": small}, batch_sizes=(1, 256), rounds=args.rounds)
    top = max({t for _, _, t in timings}, key=lambda t: t or 0)
    fewer = costs.count_macs(dense) / costs.count_macs(small)
    print(f"\n1. structured: {args.keep:.0%} of every block's inner channels kept, {fewer:.2f}x fewer MACs")
    for b in (1, 256):
        print(f"   batch {b}, threads {top}: {latency.speedup(timings, 'channels', 'dense', b, top)}")

    heads = early_exit.train_heads(dense, cifar.train[:1024], exits=("stage1", "stage2"), pool=4, epochs=30)
    exiting = early_exit.EarlyExitNet(dense, heads, args.tau).eval()
    images = cifar.test.images[:args.images].to(device).float() / 255   # uint8 -> [0, 1], as the model takes them
    with torch.inference_mode():
        _, taken = exiting(images, with_exits=True)
    macs = early_exit.macs_to_exit(dense, heads)
    expected = early_exit.expected_macs(early_exit.exit_fractions(taken, len(macs)), macs)
    times = latency.interleaved({(name, b): per_image(net, images, b) for name, net in (("full", dense), ("exit", exiting))
                                 for b in (1, len(images))}, args.rounds)
    print(f"\n2. early exit at tau {args.tau:g} on {len(images)} test images: {costs.count_macs(dense) / expected:.2f}x fewer "
          f"expected MACs; exits taken " + ", ".join(f"{f:.0%}" for f in early_exit.exit_fractions(taken, len(macs)).tolist()))
    for b in (1, len(images)):
        full, ee = times[("full", b)], times[("exit", b)]
        print(f"   batch {b}: full {statistics.median(full) * 1e3:.3f} ms/image, early exit {statistics.median(ee) * 1e3:.3f}: "
              f"{statistics.median(full) / statistics.median(ee):.2f}x (rounds allow {min(full) / max(ee):.2f}x to "
              f"{max(full) / min(ee):.2f}x)")
    print(latency.machine_load())


if __name__ == "__main__":
    main()
