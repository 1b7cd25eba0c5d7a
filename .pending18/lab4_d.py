"""Issue 18, Lab 4 (d): integer inference on ONNX Runtime, timed. Run once before Lab 4's reference run."""
from cells import code, edit, find, md, replace_in

INTRO = """## (d) Integer inference, timed

Every quantized model so far is fake-quantized: its weights take few values, but they are float32
and every multiply is a float multiply. Integer inference stores int8 weights and activations and
multiplies them in int8 with int32 accumulators. Here the pretrained model is exported to ONNX and
quantized statically by ONNX Runtime's own tools (`labkit.inference`): int8 weights, one scale per
output channel, and activation ranges calibrated on training images (calibration fits ranges, it
chooses nothing). The engine fuses the graph into integer kernels; the list below counts them. Why
this engine, and what the kernels do: [theory](../book/lab4_theory.md)."""

BUILD = """fp32_file = inference.export(models.resnet20(pretrained=True).eval(), folder / "resnet20.onnx")
int8_file = inference.quantize(fp32_file, folder / "resnet20_int8.onnx", cifar.train[:calibration])
print("the graph the engine runs:", ", ".join(f"{n} {op}" for op, n in inference.op_counts(int8_file).items()))
print(f"files: fp32 {fp32_file.stat().st_size:,} bytes, int8 {int8_file.stat().st_size:,} bytes; this CPU: {inference.int8_instructions()}")"""

ACC = """cpu_net = models.resnet20(pretrained=True).eval()   # the engine runs on the CPU: every model here does
engines = {"torch fp32": cpu_net, "torch bf16": inference.Bf16(cpu_net), "ORT fp32": inference.Engine(fp32_file),
           "ORT int8": inference.Engine(int8_file)}
acc_d = {name: train.evaluate(m, cifar.test) for name, m in engines.items()}
acc_d["fake-quantized, 8-bit weights"] = train.evaluate(quant.quantized(cpu_net, 8, mask_aware=False), cifar.test)
print(tables.table([[name, acc, f"{acc - acc_d['torch fp32']:+.2%}"] for name, acc in acc_d.items()],
                   ["model", "test accuracy", "vs fp32"], floatfmt=".2%"))
print(f"one test image = {1 / len(cifar.test):.2%}")"""

TIME = """print(latency.machine_load())
timings_d = latency.measure(engines, batch_sizes=batch_sizes, threads=threads, rounds=rounds, min_run_time=min_run_time)
print(latency.machine_load())
print(latency.latency_table(timings_d, baseline="torch fp32"))"""

PLOT = """latency.plot_models(timings_d, baseline="torch fp32", title="One forward pass: PyTorch against ONNX Runtime, fp32, bf16 and int8");"""

ANSWER = """print("Answer (d), the goals, from the timings above:")
for t in dict.fromkeys(t for _, _, t in timings_d):
    for line in inference.goals(timings_d, acc_d, batch_sizes=batch_sizes, threads=t):
        print(f" - threads {t}: {line}")
top_d = max({t for _, _, t in timings_d}, key=lambda t: t or 0)
s = latency.speedup(timings_d, "ORT int8", "torch fp32", big, top_d)
small_bytes = footprint.totals(built[f"PTQ {bits}-bit"])["+ Huffman"]
print(f"Concept (speed against bytes), on this {inference.int8_instructions()}: int8 runs {s} against fp32 at batch {big} "
      f"and {top_d} threads, and is {fp32_file.stat().st_size / int8_file.stat().st_size:.1f}x smaller than the fp32 file; "
      f"Lab 3's {bits}-bit codes alone make the file {dense_bytes / small_bytes:.1f}x smaller (a), but run no faster: "
      f"fake-quantized weights are floats, and the engine has no {bits}-bit kernels.")
results.add("acc_int8", acc_d["ORT int8"], part="(d)", label="ONNX Runtime int8 (static), test accuracy")
results.add("speedup_int8", s.median, unit="x", part="(d)", label=f"int8 against torch fp32, batch {big}, {top_d} threads")"""

WHY = """**Why (d).** Integer kernels are faster for two reasons that fake quantization has neither of:
an int8 value is a quarter of a float32, so a vector instruction multiplies four times as many,
and the activations move through memory in a quarter of the bytes. How much of that a CPU
delivers depends on its instructions (the line above names this one's): with int8 dot-product
instructions (VNNI) one instruction multiplies and accumulates groups of four int8 products into
int32; with AVX2 alone the products pass through 16-bit intermediate sums, fewer per cycle. At
batch 1 the model is too small to keep the kernels busy and fixed costs per call weigh more,
so the ratio there is smaller and can fall either way. Storage is a different matter: a few
bits per weight shrink the file at once, but they buy speed only on an engine with kernels for
that width, which for below eight bits general-purpose CPUs do not have."""


def apply(nb):
    replace_in(nb, "from pathlib import Path", "footprint, latency,", "footprint, inference, latency,")
    replace_in(nb, "run = settings.profile()", "threads = (1,) if ci else None                          # (b) CPU thread counts; None: 1, 2, 4, ... up to all",
               "threads = (1,) if ci else None                          # (b) CPU thread counts; None: 1, 2, 4, ... up to all\n"
               "calibration = 256 if ci else 1024                      # (d) training images that calibrate the int8 ranges")
    at = find(nb, "## Results\n")
    nb.cells[at:at] = [md(INTRO), code(BUILD), code(ACC), code(TIME), code(PLOT), code(ANSWER), md(WHY, grade_id="lab4_d_answer")]


edit("labs/lab4_compression.ipynb", "## (d) Integer inference, timed", apply)
