"""Inference latency of ResNet-20: dense, masked, CSR (sparse kernels) and channel-pruned (Lab 4 (b)).

    python benchmarks/bench_latency.py                    # CPU or the GPU labkit would pick
    python benchmarks/bench_latency.py --device cpu --rounds 5 --batch-sizes 1 256

Every model is timed by ``labkit.latency.measure``: ``torch.utils.benchmark`` with a warm-up call
per setting, rounds that visit all models in a fresh random order (``latency.interleaved``, so
that a busy machine slows all of them alike), medians and quartiles. The weights are the pretrained ones when the checkpoint
is found (``$LABKIT_DATA``), random otherwise: latency does not depend on the values.

It prints the latency table and checks the goals of Lab 4 (issue 9), at the largest batch and
every thread count:

1. the channel-pruned models (half and a quarter of every block's inner channels) are
   >= 1.5x faster than dense (median);
2. the 80 %-masked model is no faster than dense: its speed-up's quartile range reaches 1x or below;
3. the cross-over sparsity of the CSR kernels, if any (reported, no goal).
"""
from __future__ import annotations

import argparse

import torch

from labkit import costs, devices, latency, models, prune, sparse_kernels, structured


def build(sparsities, keeps, pretrained: bool) -> dict:
    """{(kind, fraction of weights removed): model}: dense, masked (80 %), CSR, channel-pruned."""
    def fresh():
        return models.resnet20(pretrained=pretrained, download=False)

    out = {("dense", 0.0): fresh()}
    for q in sparsities:
        net = fresh()
        prune.prune_by_percentage(net, q)
        if q == 0.8:
            out[("masked", prune.sparsity(net).total)] = net
        out[("CSR", prune.sparsity(net).total)] = sparse_kernels.to_csr(net)
    dense_weights = costs.count_params(out[("dense", 0.0)], weights_only=True)
    for keep in keeps:
        small = structured.prune_channels(out[("dense", 0.0)], keep)
        out[("channels", 1 - costs.count_params(small, weights_only=True) / dense_weights)] = small
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: labkit's pick)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95])
    parser.add_argument("--keeps", type=float, nargs="+", default=[0.5, 0.25])
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="CPU thread counts (default 1, 2, 4, ... all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per round and setting")
    args = parser.parse_args(argv)

    device = devices.pick_device(args.device)
    try:
        nets = build(args.sparsities, args.keeps, pretrained=True)
    except FileNotFoundError:
        nets = build(args.sparsities, args.keeps, pretrained=False)
    nets = {k: m.to(device) for k, m in nets.items()}
    print(latency.machine_load())
    results = latency.measure(nets, batch_sizes=args.batch_sizes, threads=args.threads, rounds=args.rounds,
                              min_run_time=args.min_run_time)
    print(latency.machine_load())
    print(f"device: {device}; torch {torch.__version__}; {torch.get_num_threads()} threads available")
    print(latency.latency_table(results, baseline=("dense", 0.0)))

    big = max(args.batch_sizes)
    dense = ("dense", 0.0)
    print(f"\ngoals at batch {big}:")
    for t in dict.fromkeys(t for _, _, t in results):
        for key in nets:
            if key[0] == "channels":
                s = latency.speedup(results, key, dense, big, t)
                print(f"  threads {t}: channels, {key[1]:.0%} of the weights removed, >= 1.5x dense: {s} "
                      f"{'met' if s.median >= 1.5 else 'NOT met'}")
            if key[0] == "masked":
                s = latency.speedup(results, key, dense, big, t)
                print(f"  threads {t}: masked {key[1]:.0%} no faster than dense: {s} "
                      f"{'met' if s.low <= 1.0 else 'NOT met'}")
    for (b, t), s in latency.crossover(results, "CSR", dense).items():
        print(f"CSR faster than dense at batch {b}, threads {t}: "
              + (f"from {s:.0%} sparsity on" if s is not None else "at none of the sparsities"))


if __name__ == "__main__":
    main()
