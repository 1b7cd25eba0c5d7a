"""labkit: the helper package of the Efficient Deep Learning labs.

The module map, bottom to top. A module imports only from layers below its own (tests/test_layout.py
holds this, imports inside functions included), so each layer can be read without the ones above.

Layer 0, leaves (no labkit imports but `checks` and `settings`, which import none):
    settings       every LABKIT_* environment variable, read once per entry point; the run Profile
    course         the course's shared parameters (sparsities, bits, epochs, seeds), one edition per term
    checks         argument checks with clear errors (int, finite number, fraction, flag, choice)
    tables         plain-text tables: every table labkit prints
    stats          noise: binomial standard error, mean ± std over seeds, verdict sentences (compare)
    layers         prunable layers, the stored weight and the parametrizations on it; eval mode
    progress       progress bars (widgets, text or off)
    files          atomic writes: every file labkit writes
    huffman        canonical Huffman codes (Lab 4)
    judge          the self-checks' and the grader's judge: observe (the student's side), judge (labkit's side)
Layer 1:
    download       the data folder, checked downloads (MD5, SHA-256)
    devices        the device, bf16/fp16 by capability, memory format, autocast
    plots          the labs' figures of runs and weights (size and latency plots live with footprint and latency)
    sparse_linear  Lab 1: sparse optimisation of a linear model (numpy)
Layer 2:
    data           CIFAR-10 as uint8 tensors (downloaded once), the validation split, batches, augmentation
    models         ResNet-20 for CIFAR-10, the pretrained checkpoint
Layer 3:
    train          TrainConfig, the one training loop, callbacks, History, evaluate
Layer 4:
    prune          Lab 2: the percentile rule, the Mask, sparsity, iterative pruning
    quant          Lab 3: the fixed-point quantizer, the straight-through estimator, QAT
    structured     Lab 4 (c): channel pruning of the residual blocks
    sparse_kernels Lab 4 (b): CSR convolution and linear layers
    costs          parameter and multiply-accumulate counts
    latency        Lab 4 (b): interleaved timing, speed-ups with their spread
Layer 5:
    checkpoints    saving and loading a pruned and/or quantized model (one loader)
    compress       Lab 4 (a): the Deep Compression file format (CSR, codebooks, Huffman)
    report         a run's header, seeds tables, results for the book's results page
    inference      Lab 4 (d): int8 inference on ONNX Runtime (export, static quantization, Engine), bf16
    group_lasso    Lab 5 (a), (b): L1 and Group Lasso training, subgradient and proximal (callbacks)
    early_exit     Lab 5 (c): internal classifiers, the exit rule, expected MACs, overthinking
Layer 6:
    footprint      Lab 4 (a): bytes on disk per compression stage
    sensitivity    Lab 2 (f), Lab 3 (g): one-layer-at-a-time scans, sparsity and bits per layer
    handover       the models one lab hands to the next, published from the reference run, and the fallback
    exercises      Labs 1-5: the exercises, their inputs, references and usual mistakes; check, by key

Naming: a table of one result is its ``.table()`` method (``History.table``, ``Sparsity.table``);
a table comparing several is the module's ``<what>_table(...)`` function.
"""
__version__ = "0.1.0"   # pyproject.toml's version (tests/test_handouts.py holds them equal); the handouts pin it

LAYERS = (
    ("settings", "course", "checks", "tables", "stats", "layers", "progress", "files", "huffman", "judge"),
    ("download", "devices", "plots", "sparse_linear"),
    ("data", "models"),
    ("train",),
    ("prune", "quant", "structured", "sparse_kernels", "costs", "latency"),
    ("checkpoints", "compress", "report", "inference", "group_lasso", "early_exit"),
    ("footprint", "sensitivity", "handover", "exercises"),
)
