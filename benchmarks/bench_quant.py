"""Cost of quantization-aware training: a training step of ResNet-20 with its residual stages
quantized (labkit.quant) against the same step of the float model, in one process.

    python benchmarks/bench_quant.py                      # CPU or the GPU labkit would pick
    python benchmarks/bench_quant.py --device cpu --steps 40

Four models, the same batch, labkit's own training step (the one of ``labkit.train.train``:
autocast in the precision ``"auto"`` picks on the device, ``channels_last`` where labkit uses it,
SGD with the course's settings, ``labkit.train.TrainConfig``'s):

1. dense: the float pretrained-size model, no parametrization;
2. 4 bits: ``quant.set_bits(net, 4)``, the 18 residual convolutions quantized in every forward
   pass, straight-through gradient;
3. 80 % pruned: ``prune.prune_by_percentage(net, 0.8)``, float, masks held (Lab 2);
4. 80 % pruned + 4 bits: the mask, then the mask-aware quantizer (Lab 3 (d)).

The steps of the four run interleaved (every round calls each once, in a fresh random order) and
each figure is a ratio of medians against the dense step, so that a busy machine slows all of
them alike; the spread is the interquartile range of each model's step times.
Goal: quantization-aware steps >= 0.9x the dense step (the quantizer adds element-wise work only).
Uses random images unless CIFAR-10 is found (``$LABKIT_DATA``): the time does not depend on pixels.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bench_train import load_images, sgd, sync   # same folder: the images and the course's SGD
from labkit import devices, prune, quant
from labkit.latency import interleaved
from labkit.models import resnet20


def labkit_step(net, optimizer, X, y, precision, scaler) -> float:
    """Seconds of one step as ``labkit.train.train`` does it (its loop body, without the bookkeeping)."""
    sync(X.device)
    start = time.perf_counter()
    with devices.autocast(X.device, precision):
        loss = F.cross_entropy(net(X), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    sync(X.device)
    return time.perf_counter() - start


def build_models(bits: int, sparsity: float) -> dict:
    torch.manual_seed(0)
    base = resnet20()
    nets = {name: resnet20() for name in ("dense", f"{bits} bits", f"{sparsity:.0%} pruned",
                                          f"{sparsity:.0%} pruned + {bits} bits")}
    for net in nets.values():
        net.load_state_dict(base.state_dict())
    quant.set_bits(nets[f"{bits} bits"], bits)
    prune.prune_by_percentage(nets[f"{sparsity:.0%} pruned"], sparsity)
    both = nets[f"{sparsity:.0%} pruned + {bits} bits"]
    prune.prune_by_percentage(both, sparsity)
    quant.set_bits(both, bits)
    return nets


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="default: what labkit picks (CUDA, MPS, CPU)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30, help="interleaved training steps per model")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--sparsity", type=float, default=0.8)
    args = parser.parse_args()
    device = devices.pick_device(args.device)
    precision = devices.resolve_precision("auto", device)
    memory_format = devices.resolve_memory_format("auto", device)
    data, source = load_images(args.batch_size, 1, device)
    X = (data.train.images.float() / 255).contiguous(memory_format=memory_format)   # (B, 3, 32, 32)
    y = data.train.labels
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"device {device}{threads}; torch {torch.__version__}; ResNet-20, batch {len(y)} {source}; "
          f"labkit's step in {precision} ({'autocast' if precision != 'fp32' else 'no autocast'}), "
          f"{'channels_last' if memory_format == torch.channels_last else 'contiguous'}; "
          f"medians of {args.steps} interleaved steps\n")

    nets = {name: net.to(device).to(memory_format=memory_format) for name, net in build_models(args.bits, args.sparsity).items()}
    opts = {name: sgd(net) for name, net in nets.items()}    # the course's SGD (labkit.train.TrainConfig)
    scalers = {name: torch.amp.GradScaler(device.type, enabled=precision == "fp16") for name in nets}
    times = interleaved({name: (lambda name=name: labkit_step(nets[name], opts[name], X, y, precision,
                                                              scalers[name]))
                         for name in nets}, args.steps)       # after one warm-up step each
    medians = {name: statistics.median(t) for name, t in times.items()}
    b = len(y)
    dense = medians["dense"]
    for name, t in medians.items():
        q1, _, q3 = statistics.quantiles(times[name], n=4)
        line = f"{name:<22} {b / t:7.0f} img/s  (step {1000 * t:6.1f} ms, IQR {1000 * q1:.1f}-{1000 * q3:.1f} ms)"
        if name != "dense":
            line += f"   {dense / t:.3f}x dense"
            if "bits" in name:
                line += "   (goal >= 0.9x)"
        print(line)
    # The cost of the quantizer alone on a pruned model, against the pruned float model.
    pruned, both = (f"{args.sparsity:.0%} pruned", f"{args.sparsity:.0%} pruned + {args.bits} bits")
    print(f"\nquantizer on the pruned model: {medians[pruned] / medians[both]:.3f}x the pruned float step")


if __name__ == "__main__":
    main()
