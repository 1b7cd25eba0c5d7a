"""Integer inference of ResNet-20 (Lab 4 (d)): ONNX Runtime int8 against PyTorch fp32, in one process.

    python benchmarks/bench_int8.py                      # batch 1 and 256, 1 and all threads
    python benchmarks/bench_int8.py --rounds 7 --batch-sizes 256

Models: PyTorch fp32 (the baseline), PyTorch bf16 autocast (`labkit.inference.Bf16`), the same
float model on ONNX Runtime (fp32), and its static int8 quantization (`labkit.inference.quantize`,
calibrated on 1024 training images). Every one is timed by ``labkit.latency.measure`` (warm-up,
interleaved rounds, medians and quartiles), with the machine's load before and after. It prints
the accuracy of each on the test images and checks the goals of Lab 4 (d): int8 >= 3x faster than
PyTorch fp32 at the largest batch, faster at batch 1, accuracy within 0.5 points of the float model.
The speed-ups say "faster" only when their quartile ranges clear 1x (`latency.Speedup`).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from labkit import data, inference, latency, models, train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="CPU thread counts (default 1, 2, 4, ... all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per round and setting")
    parser.add_argument("--calibration", type=int, default=1024, help="training images that calibrate the ranges")
    args = parser.parse_args(argv)

    cifar = data.cifar10()
    net = models.resnet20(pretrained=True).eval()
    with tempfile.TemporaryDirectory() as tmp:
        fp32_file = inference.export(net, Path(tmp, "resnet20.onnx"))
        int8_file = inference.quantize(fp32_file, Path(tmp, "resnet20_int8.onnx"), cifar.train[:args.calibration])
        ops = inference.op_counts(int8_file)
        nets = {"torch fp32": net, "torch bf16": inference.Bf16(net),
                "ORT fp32": inference.Engine(fp32_file), "ORT int8": inference.Engine(int8_file)}
        acc = {name: train.evaluate(m, cifar.test) for name, m in nets.items()}
        print(latency.machine_load(), "|", inference.int8_instructions())
        results = latency.measure(nets, batch_sizes=args.batch_sizes, threads=args.threads, rounds=args.rounds,
                                  min_run_time=args.min_run_time)
        print(latency.machine_load())
    print(f"torch {torch.__version__}; int8 graph: " + ", ".join(f"{n} {op}" for op, n in ops.items() if op.startswith("Q")))
    print("accuracy on the", len(cifar.test), "test images: " + ", ".join(f"{k} {v:.2%}" for k, v in acc.items()))
    print(latency.latency_table(results, baseline="torch fp32"))

    print(f"\ngoals (int8 = ORT int8, against torch fp32 in this process):")
    for t in dict.fromkeys(t for _, _, t in results):
        for line in inference.goals(results, acc, batch_sizes=args.batch_sizes, threads=t):
            print(f"  threads {t}: {line}")
        e = latency.speedup(results, "ORT int8", "ORT fp32", max(args.batch_sizes), t)
        print(f"  threads {t}: int8 against the engine's own fp32 at batch {max(args.batch_sizes)}: {e}")


if __name__ == "__main__":
    main()
