"""ResNet-20 for CIFAR-10 (He et al. 2016, §4.2) and the published pretrained checkpoint.

The architecture follows Yerlan Idelbayev's `pytorch_resnet_cifar10` (BSD 2-clause), whose
`resnet20-12fca82f.th` we load: 3x3 conv (3→16) + BN + ReLU, three stages of three basic blocks
(16/32/64 channels, stride 2 at the first block of stages 2 and 3), global average pool,
Linear(64→10).
Shortcuts are "option A": parameter-free, so the only weights are the 19 convolutions (no bias) and
the final Linear, 268 336 prunable weights in all.

Module names read well in a sparsity table: conv1, bn1, stage1.0.conv1, stage1.0.bn1, ...,
stage3.2.conv2, fc. ``labkit.layers.prunable_layers(net)`` lists the Conv2d and Linear modules in
model order.

The model carries its input normalisation (buffers `mean`, `std`): forward takes float images
in [0, 1].

Loading, one step a function: `resnet20(pretrained=True)` builds the model and loads the file
found or downloaded by `checkpoint_path(root)`; `load_checkpoint(net, path)` checks its SHA-256
and reads it, `load_weights(net, state)` checks that the keys fit and copies them,
`convert_state_dict(state)` renames the published keys (module.layerN.i.* -> stageN.i.*,
linear -> fc). A pruned and/or quantized model is saved and loaded by ``labkit.checkpoints``.
"""
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import download, settings
from .layers import parametrizations

CHECKPOINT_URL = ("https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/"
                  "pretrained_models/resnet20-12fca82f.th")
CHECKPOINT_FILE = "resnet20-12fca82f.th"
CHECKPOINT_SHA256_PREFIX = "12fca82f"  # torch.hub convention: the name's hex starts the SHA-256
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what the published checkpoint was trained with
IMAGENET_STD = (0.229, 0.224, 0.225)


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut for a block that halves the resolution and widens the channels.

    y = x[:, :, ::stride, ::stride] with planes//4 zero channels added before and after, exactly the
    LambdaLayer of the reference: (B, C, H, W) -> (B, C + 2*(planes//4), H/stride, W/stride).
    """

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.pad, self.stride = planes // 4, stride
        if in_planes + 2 * self.pad != planes:
            raise ValueError(f"option-A shortcut pads planes//4 channels on each side, which maps "
                             f"{in_planes} channels to {in_planes + 2 * self.pad}, not {planes}; "
                             f"use planes = 2 * in_planes")

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]  # (B, C, H/s, W/s)
        # pad = (W left, W right, H top, H bottom, C front, C back): zeros only in the channels
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)  # (B, C+2*pad, H/s, W/s)

    def extra_repr(self):
        return f"stride={self.stride}, pad_channels={self.pad}"


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), two 3x3 convs without bias.

    `inner` is the width between the two convs (conv1's output channels, bn1, conv2's input
    channels); default `planes`. A smaller one is a channel-pruned block (labkit.structured):
    the block's input and output keep `in_planes` and `planes` channels, so the shortcut is
    unchanged.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, inner: int | None = None):
        super().__init__()
        inner = planes if inner is None else inner
        if isinstance(inner, bool) or not isinstance(inner, int) or inner < 1:
            raise ValueError(f"inner must be a positive int (the channels between the block's two "
                             f"convs) or None for planes={planes}, got {inner!r}")
        self.conv1 = nn.Conv2d(in_planes, inner, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = OptionAShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):                      # (B, C_in, H, W)
        out = F.relu(self.bn1(self.conv1(x)))  # (B, inner, H/s, W/s)
        out = self.bn2(self.conv2(out))        # (B, C, H/s, W/s)
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet with three stages of `num_blocks[i]` basic blocks of widths 16/32/64.

    forward(x): x float (B, 3, H, W) in [0, 1] -> logits (B, num_classes). The first step is
    x_n = (x - mean) / std with the buffers `mean`, `std` of shape (1, 3, 1, 1).
    Convs and the Linear start Kaiming-normal (fan_in, gain sqrt(2)) as in the reference.

    inner: None (every block full width) or one int per block, in model order (stage1.0, ...,
    stage3.2: sum(num_blocks) of them), the channels between each block's two convs. A
    channel-pruned ResNet-20 (labkit.structured.prune_channels) is ResNet(inner=widths), e.g.
    ResNet(inner=(8,) * 3 + (16,) * 3 + (32,) * 3) for half of them; its widths are read back
    from a state dict as the first dimension of each 'stageN.i.conv1.weight'.
    """

    def __init__(self, num_blocks=(3, 3, 3), num_classes: int = 10,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, inner=None):
        super().__init__()
        if inner is None:
            inner = (None,) * sum(num_blocks)
        inner = tuple(inner)
        if len(inner) != sum(num_blocks):
            raise ValueError(f"inner must give one width per block ({sum(num_blocks)} for "
                             f"num_blocks={tuple(num_blocks)}), got {len(inner)}: {inner}")
        per_stage = [inner[sum(num_blocks[:i]):sum(num_blocks[:i + 1])] for i in range(3)]
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.stage1 = self._make_stage(16, 16, num_blocks[0], stride=1, inner=per_stage[0])
        self.stage2 = self._make_stage(16, 32, num_blocks[1], stride=2, inner=per_stage[1])
        self.stage3 = self._make_stage(32, 64, num_blocks[2], stride=2, inner=per_stage[2])
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)  # biases (fc only) keep PyTorch's default

    @staticmethod
    def _make_stage(in_planes, planes, n, stride, inner):
        blocks = [BasicBlock(in_planes, planes, stride, inner[0])]
        blocks += [BasicBlock(planes, planes, 1, inner[i]) for i in range(1, n)]
        return nn.Sequential(*blocks)

    def forward(self, x):                    # (B, 3, 32, 32) in [0, 1]
        x = (x - self.mean) / self.std
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 16, 32, 32)
        x = self.stage1(x)                   # (B, 16, 32, 32)
        x = self.stage2(x)                   # (B, 32, 16, 16)
        x = self.stage3(x)                   # (B, 64, 8, 8)
        x = x.mean(dim=(2, 3))               # (B, 64) global average pool
        return self.fc(x)                    # (B, num_classes)


def convert_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """Published `pytorch_resnet_cifar10` keys -> labkit names.

    Accepts the file's dict {'best_prec1': .., 'state_dict': {...}} or a bare state dict.
    Renames: strip 'module.' (DataParallel), 'layerN.' -> 'stageN.', 'linear.' -> 'fc.'.
    Keys already in labkit layout pass through unchanged.
    """
    return {_convert_key(k): v for k, v in _unwrap(checkpoint).items()}


def _unwrap(checkpoint: dict) -> dict:
    return checkpoint["state_dict"] if "state_dict" in checkpoint else checkpoint


def _convert_key(key: str) -> str:
    key = key.removeprefix("module.")
    key = re.sub(r"^layer(\d+)\.", r"stage\1.", key)
    return re.sub(r"^linear\.", "fc.", key)


def _absent_from_published(key: str) -> bool:
    """Model state that the published file does not carry (kept from the model when loading)."""
    return key in ("mean", "std") or key.endswith(".num_batches_tracked")


def load_weights(net: ResNet, checkpoint: dict) -> ResNet:
    """Copy a published (or labkit) state dict into `net`; raises ValueError unless it fits exactly.

    Keys the published file lacks keep their value in `net`: the normalisation buffers `mean`, `std`
    and BatchNorm's `num_batches_tracked`. Any other missing key, any unexpected key and any shape
    mismatch is reported together, and then nothing is loaded.

    `net` must not be pruned or quantized yet (its weights parametrized): load first, then prune or
    quantize; a state dict saved from a pruned or quantized model loads with
    ``labkit.checkpoints.load``.
    """
    parametrized = [name for name, m in net.named_modules() if parametrizations(m)]
    if parametrized:
        raise ValueError(f"load_weights: layers {parametrized} are already pruned or quantized "
                         f"(parametrized); load the weights into a fresh model first, then prune or "
                         f"quantize it, or use labkit.checkpoints.load for a state dict saved from "
                         f"such a model")
    raw = _unwrap(checkpoint)
    origin = {_convert_key(k): k for k in raw}  # labkit name -> name in the checkpoint
    state = convert_state_dict(raw)
    own = net.state_dict()
    missing = [k for k in own if k not in state and not _absent_from_published(k)]
    unexpected = [origin[k] for k in state if k not in own]
    shapes = [f"{origin[k]}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
              for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            "checkpoint does not fit this ResNet (nothing was loaded):\n"
            f"  missing keys (labkit names): {missing}\n"
            f"  unexpected keys (checkpoint names): {unexpected}\n"
            f"  shape mismatches: {shapes}\n"
            "Expected the layout of pytorch_resnet_cifar10's resnet20 (module.layerN.i.convK/bnK, "
            "module.linear) for resnet20(num_classes=10).")
    net.load_state_dict(state, strict=False)  # strictness checked above, with better messages
    return net


def load_checkpoint(net: ResNet, path, *, sha256_prefix: str | None = None) -> ResNet:
    """Verify a checkpoint file's SHA-256, then load it into `net` with `load_weights`.

    sha256_prefix: hex digits the SHA-256 must start with (8 to 64); None (default) takes the hex
    after the last '-' in the file name (torch.hub's convention, e.g. resnet20-12fca82f.th ->
    '12fca82f'); a file name without one is not verified. An empty or non-hex prefix is refused:
    it would check nothing. The file is read with torch.load(weights_only=True, map_location='cpu').
    """
    path = Path(path)
    if sha256_prefix is None:
        m = re.search(r"-([0-9a-f]{8,64})\.[^.]*$", path.name)
        sha256_prefix = m.group(1) if m else None
    elif not (isinstance(sha256_prefix, str) and re.fullmatch(r"[0-9a-fA-F]{8,64}", sha256_prefix)):
        raise ValueError(f"sha256_prefix must be 8 to 64 hex digits (or None: from the file name), got "
                         f"{sha256_prefix!r}; a shorter prefix would verify (almost) nothing")
    if sha256_prefix is not None:
        sha256_prefix = sha256_prefix.lower()
        actual = download.sha256(path)
        if not actual.startswith(sha256_prefix):
            raise ValueError(f"checkpoint {path} is corrupt or not the expected file: its SHA-256 "
                             f"is {actual}, expected one starting with {sha256_prefix}. Delete it "
                             f"so that it is downloaded again, or replace it with a good copy.")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return load_weights(net, checkpoint)


def checkpoint_path(root=None, *, download: bool = True) -> Path:
    """The pretrained checkpoint's file in the data folder (``settings.data_folder(root)``); when
    it is absent, ``download=True`` fetches it from CHECKPOINT_URL (SHA-256 checked) and
    ``download=False`` raises FileNotFoundError saying where it looked."""
    from . import download as dl  # the module; the name `download` is the argument here

    folder, source = settings.data_folder(root)
    path = dl.check_folder(folder, source) / CHECKPOINT_FILE
    if path.is_file():
        return path
    if not download:
        raise FileNotFoundError(
            f"The ResNet-20 checkpoint was looked for at {path.absolute()} (folder from "
            f"{source}); download=False, so nothing was fetched. Pass download=True to "
            f"fetch it from {CHECKPOINT_URL}. {dl.offline_hint(CHECKPOINT_FILE)}")
    try:
        dl.fetch(CHECKPOINT_URL, path, sha256_prefix=CHECKPOINT_SHA256_PREFIX, desc="ResNet-20 checkpoint",
                 progress=settings.progress())
    except dl.DownloadError as e:
        raise type(e)(f"{e}\nThe checkpoint was looked for at {path.absolute()} "
                      f"(folder from {source}).") from e
    return path


def resnet20(*, pretrained: bool = False, num_classes: int = 10, root=None,
             download: bool = True) -> ResNet:
    """ResNet-20 (3 blocks per stage, 0.27M parameters) in train mode, on the CPU.

    pretrained=True loads resnet20-12fca82f.th (91.78 % on the CIFAR-10 test set) from
    `labkit.download.data_dir(root)`; when it is absent, ``download=True`` fetches it there from
    CHECKPOINT_URL, and ``download=False`` raises FileNotFoundError (as ``labkit.data.cifar10``).
    To quantize it: ``labkit.quant.quantized(resnet20(pretrained=True), bits)``.
    """
    net = ResNet((3, 3, 3), num_classes=num_classes)
    if pretrained:
        if num_classes != 10:
            raise ValueError(f"the pretrained checkpoint has 10 classes, got "
                             f"num_classes={num_classes}; use pretrained=False for another number")
        load_checkpoint(net, checkpoint_path(root, download=download),
                        sha256_prefix=CHECKPOINT_SHA256_PREFIX)
    return net
