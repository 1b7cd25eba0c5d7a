"""Tests for labkit.models: ResNet-20 architecture, option-A shortcuts, checkpoint loading."""
import hashlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit import models
from labkit.layers import prunable_layers
from labkit.models import convert_state_dict, load_checkpoint, load_weights, resnet20

# (name, c_in, c_out) of every 3x3 conv, written out by hand from He et al. 2016 §4.2.
CONVS = ([("conv1", 3, 16)]
         + [(f"stage1.{i}.conv{k}", 16, 16) for i in range(3) for k in (1, 2)]
         + [("stage2.0.conv1", 16, 32), ("stage2.0.conv2", 32, 32)]
         + [(f"stage2.{i}.conv{k}", 32, 32) for i in (1, 2) for k in (1, 2)]
         + [("stage3.0.conv1", 32, 64), ("stage3.0.conv2", 64, 64)]
         + [(f"stage3.{i}.conv{k}", 64, 64) for i in (1, 2) for k in (1, 2)])


def random_net(seed: int) -> models.ResNet:
    """A ResNet-20 with random weights and random (non-default) BatchNorm statistics, eval mode."""
    torch.manual_seed(seed)
    net = resnet20()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def option_a_reference(x: torch.Tensor, c_out: int) -> torch.Tensor:
    """Subsample by 2; the channels sit in the middle of c_out zero channels (no F.pad used)."""
    b, c, h, w = x.shape
    y = torch.zeros(b, c_out, h // 2, w // 2, dtype=x.dtype)
    lo = (c_out - c) // 2
    for i in range(h // 2):
        for j in range(w // 2):
            y[:, lo:lo + c, i, j] = x[:, :, 2 * i, 2 * j]
    return y


def block_reference(block, x: torch.Tensor, c_out: int) -> torch.Tensor:
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + option-A shortcut(x)), by calling the submodules."""
    out = F.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    return F.relu(out + option_a_reference(x, c_out))


# ---------------------------------------------------------------- architecture

def test_output_shape():
    net = resnet20()
    assert net(torch.rand(4, 3, 32, 32)).shape == (4, 10)
    assert resnet20(num_classes=7)(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_prunable_layers_names_shapes_and_count():
    net = resnet20()
    layers = prunable_layers(net)
    expected = [(n, (co, ci, 3, 3)) for n, ci, co in CONVS] + [("fc", (10, 64))]
    assert [(n, tuple(m.weight.shape)) for n, m in layers] == expected
    # independent count: 3*3*c_in*c_out per conv + 64*10 for the fc
    count = sum(9 * ci * co for _, ci, co in CONVS) + 64 * 10
    assert count == 268_336
    assert sum(m.weight.numel() for _, m in layers) == count
    # every Conv2d/Linear is listed, and the modules are the net's own
    own = {id(m) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {id(m) for _, m in layers} == own
    assert dict(net.named_modules())["stage3.2.conv2"] is layers[-2][1]


def test_total_parameters_is_0_27M():
    net = resnet20()
    n_prunable = sum(9 * ci * co for _, ci, co in CONVS) + 64 * 10
    bn_channels = 16 + 6 * 16 + 6 * 32 + 6 * 64  # stem BN + two BNs per block
    total = n_prunable + 2 * bn_channels + 10     # BN weight+bias, fc bias
    assert sum(p.numel() for p in net.parameters()) == total == 269_722  # "0.27M"
    # parameters are only conv/fc weights, fc bias and BN affine parameters
    kinds = {type(m) for m in net.modules() if list(m.parameters(recurse=False))}
    assert kinds == {nn.Conv2d, nn.Linear, nn.BatchNorm2d}


def test_no_conv_has_a_bias():
    convs = [m for m in resnet20().modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19
    assert all(m.bias is None for m in convs)


def test_kaiming_normal_init():
    torch.manual_seed(0)
    layers = dict(prunable_layers(resnet20()))
    # kaiming_normal_ (fan_in, relu gain): std = sqrt(2 / fan_in); PyTorch's default would give
    # std = 1 / sqrt(3 * fan_in), 2.4x smaller.
    for name, tol in [("stage3.1.conv1", 0.03), ("stage3.2.conv2", 0.03), ("stage2.1.conv1", 0.05),
                      ("fc", 0.15)]:
        w = layers[name].weight.detach()
        fan_in = w[0].numel()
        assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=tol), name
        assert abs(w.mean().item()) < 4 * math.sqrt(2 / fan_in) / math.sqrt(w.numel()), name


def test_normalisation_buffers_and_forward():
    torch.manual_seed(0)
    net = random_net(0)
    assert net.mean.shape == net.std.shape == (1, 3, 1, 1)
    assert net.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    assert net.std.flatten().tolist() == pytest.approx([0.229, 0.224, 0.225])
    # buffers, not parameters: saved with the model, never trained
    assert {"mean", "std"} <= dict(net.named_buffers()).keys()

    x = torch.rand(3, 3, 32, 32)
    m = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    s = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        h = F.relu(net.bn1(net.conv1((x - m) / s)))
        for stage in (net.stage1, net.stage2, net.stage3):
            for block in stage:
                h = block(h)
        ref = net.fc(F.avg_pool2d(h, 8).flatten(1))
        out = net(x)
    torch.testing.assert_close(out, ref)


def test_option_a_shortcut_is_subsample_and_zero_pad_without_parameters():
    net = resnet20()
    for block, x_shape, c_out in [(net.stage2[0], (2, 16, 32, 32), 32),
                                  (net.stage3[0], (2, 32, 16, 16), 64)]:
        x = torch.randn(x_shape)
        y = block.shortcut(x)
        assert torch.equal(y, option_a_reference(x, c_out))
        assert list(block.shortcut.parameters()) == [] and list(block.shortcut.buffers()) == []
    # every other block has an identity shortcut
    x = torch.randn(2, 16, 32, 32)
    assert torch.equal(net.stage1[1].shortcut(x), x)
    assert sum(p.numel() for n, p in net.named_parameters() if "shortcut" in n) == 0


def test_block_at_stage_change_matches_hand_composition():
    net = random_net(1)
    seen = {}
    def keep(name):
        return lambda module, inp, out: seen.__setitem__(name, (inp[0], out))

    hooks = [net.stage2[0].register_forward_hook(keep("stage2.0")),
             net.stage3[0].register_forward_hook(keep("stage3.0"))]
    with torch.no_grad():
        net(torch.rand(2, 3, 32, 32))
        for name, block, shape in [("stage2.0", net.stage2[0], (2, 32, 16, 16)),
                                   ("stage3.0", net.stage3[0], (2, 64, 8, 8))]:
            inp, out = seen[name]
            c_out = shape[1]
            assert out.shape == shape
            torch.testing.assert_close(out, block_reference(block, inp, c_out))
    for h in hooks:
        h.remove()


# ---------------------------------------------------------------- checkpoint loading

def published_layout(net) -> dict:
    """The file layout of pytorch_resnet_cifar10 built from a labkit model (inverse key mapping)."""
    sd = {}
    for k, v in net.state_dict().items():
        if k in ("mean", "std") or k.endswith("num_batches_tracked"):
            continue  # the published file has neither
        if k.startswith("stage"):
            k = "layer" + k[len("stage"):]
        elif k.startswith("fc."):
            k = "linear." + k[len("fc."):]
        sd["module." + k] = v.clone()
    return {"best_prec1": 91.78, "state_dict": sd}


def save_hashed(checkpoint, folder, prefix=None):
    """torch.save to folder/resnet20-<first 8 hex of its SHA-256>.th (or a given prefix)."""
    tmp = folder / "tmp.th"
    torch.save(checkpoint, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"resnet20-{prefix or digest[:8]}.th"
    tmp.rename(path)
    return path, digest


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(sa[k], sb[k]), k


def test_convert_state_dict_maps_the_published_file_onto_the_model(data_root):
    """The real file's keys (not our imitation of them) land on labkit's names, shapes equal."""
    published = torch.load(data_root / models.CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    converted = convert_state_dict(published)
    own = resnet20().state_dict()
    want = {k for k in own if k not in ("mean", "std") and "num_batches" not in k}
    assert converted.keys() == want
    assert all(converted[k].shape == own[k].shape for k in want)
    assert torch.equal(converted["fc.weight"], published["state_dict"]["module.linear.weight"])
    assert torch.equal(converted["stage3.2.bn2.bias"], published["state_dict"]["module.layer3.2.bn2.bias"])


def test_convert_state_dict_maps_every_key():
    net = resnet20()
    ckpt = published_layout(net)
    converted = convert_state_dict(ckpt)
    want = {k for k in net.state_dict() if k not in ("mean", "std") and "num_batches" not in k}
    assert converted.keys() == want
    assert torch.equal(converted["stage2.1.conv2.weight"], net.stage2[1].conv2.weight)
    assert torch.equal(converted["fc.bias"], net.fc.bias)
    # a bare state dict works too, and labkit keys pass through unchanged
    assert convert_state_dict(ckpt["state_dict"]).keys() == want
    assert convert_state_dict(net.state_dict()).keys() == net.state_dict().keys()


def test_load_checkpoint_file_round_trip(tmp_path):
    src = random_net(1)
    path, _ = save_hashed(published_layout(src), tmp_path)
    dst = random_net(2)
    assert not torch.equal(dst.fc.weight, src.fc.weight)
    assert load_checkpoint(dst, path) is dst
    assert_same_state(dst, src)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_load_weights_labkit_state_dict_round_trip():
    src, dst = random_net(3), random_net(4)
    load_weights(dst, src.state_dict())
    assert_same_state(dst, src)


@pytest.mark.parametrize("edit, named", [
    (lambda sd: sd.pop("module.layer2.1.bn2.running_var"), "stage2.1.bn2.running_var"),
    (lambda sd: sd.__setitem__("module.layer4.0.conv1.weight", torch.zeros(1)),
     "module.layer4.0.conv1.weight"),
    (lambda sd: sd.__setitem__("module.linear.weight", torch.zeros(5, 64)), "module.linear.weight"),
])
def test_non_fitting_checkpoint_names_the_keys_and_loads_nothing(edit, named):
    ckpt = published_layout(random_net(5))
    edit(ckpt["state_dict"])
    dst = random_net(6)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        load_weights(dst, ckpt)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


def test_wrong_sha256_prefix_raises_and_loads_nothing(tmp_path):
    ckpt = published_layout(random_net(7))
    path, digest = save_hashed(ckpt, tmp_path, prefix="deadbeef")  # named with a wrong prefix
    assert not digest.startswith("deadbeef")
    dst = random_net(8)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_checkpoint(dst, path)
    assert str(path) in str(err.value) and "deadbeef" in str(err.value) and digest in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())
    # an explicit prefix overrides the file name: the right one loads, a wrong one raises
    load_checkpoint(dst, path, sha256_prefix=digest[:8])
    assert_same_state(dst, random_net(7))
    with pytest.raises(ValueError, match="expected one starting with 1234abcd"):
        load_checkpoint(dst, path, sha256_prefix="1234abcd")


@pytest.mark.parametrize("prefix", ["", "12fca8", "not-hex!", 12345678])
def test_an_empty_or_short_sha256_prefix_is_refused_not_skipped(tmp_path, prefix):
    """Issue 14 #8: sha256_prefix="" used to skip the check silently (and load a wrong file)."""
    path, digest = save_hashed(published_layout(random_net(11)), tmp_path, prefix="deadbeef")
    dst = random_net(12)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError, match="sha256_prefix must be 8 to 64 hex digits"):
        load_checkpoint(dst, path, sha256_prefix=prefix)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


def test_resnet20_has_no_bits_argument():
    """resnet20 builds and loads; quantizing is labkit.quant's (quant.quantized, quant.bits)."""
    with pytest.raises(TypeError):
        resnet20(bits=4)


# ---------------------------------------------------------------- pretrained=True

def test_checkpoint_constants_agree_with_each_other():
    """The URL's file is the file looked for, and its name carries the hash prefix checked."""
    assert models.CHECKPOINT_URL.rsplit("/", 1)[1] == models.CHECKPOINT_FILE
    assert models.CHECKPOINT_FILE == f"resnet20-{models.CHECKPOINT_SHA256_PREFIX}.th"


def test_checkpoint_hash_prefix_matches_the_real_file(data_root):
    from labkit import download

    digest = download.sha256(data_root / models.CHECKPOINT_FILE)
    assert digest.startswith(models.CHECKPOINT_SHA256_PREFIX)


def test_pretrained_downloads_when_absent_then_uses_local_copy(tmp_path, monkeypatch):
    from labkit import download

    src = random_net(9)
    fake, digest = save_hashed(published_layout(src), tmp_path)
    data = fake.read_bytes()
    fake.unlink()
    root = tmp_path / "data"
    # the real checkpoint's hash cannot be faked: point the name and prefix at the fake file's
    monkeypatch.setattr(models, "CHECKPOINT_FILE", f"resnet20-{digest[:8]}.th")
    monkeypatch.setattr(models, "CHECKPOINT_SHA256_PREFIX", digest[:8])
    calls = []

    def fake_fetch(url, dest, *, md5=None, sha256_prefix=None, desc=None, progress="auto"):
        calls.append((url, dest, sha256_prefix, progress))
        dest.parent.mkdir(parents=True, exist_ok=True)  # as the real fetch does
        dest.write_bytes(data)
        return dest

    monkeypatch.setattr(download, "fetch", fake_fetch)
    monkeypatch.setenv("LABKIT_PROGRESS", "off")       # read once where the fetch is called, passed down
    net = resnet20(pretrained=True, root=root)
    assert calls == [(models.CHECKPOINT_URL, root / f"resnet20-{digest[:8]}.th", digest[:8], "off")]
    assert_same_state(net.eval(), src)
    resnet20(pretrained=True, root=root)  # file present now: no second download
    assert len(calls) == 1


def test_pretrained_corrupt_local_file_is_reported(tmp_path, monkeypatch):
    from labkit import download

    def no_fetch(*args, **kwargs):
        raise AssertionError("must not download when the file is present")

    monkeypatch.setattr(download, "fetch", no_fetch)
    path = tmp_path / "resnet20-12fca82f.th"
    path.write_bytes(b"not a checkpoint")
    actual = hashlib.sha256(b"not a checkpoint").hexdigest()
    with pytest.raises(ValueError) as err:
        resnet20(pretrained=True, root=tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "12fca82f" in msg and actual in msg and "Delete" in msg


def test_pretrained_offline_says_where_it_looked(tmp_path, monkeypatch):
    """No file and no network: the error names the URL's failure, the path and where the folder came from."""
    from labkit import download

    def offline(url, dest, **kwargs):
        raise download.DownloadError(f"Could not download {url}: no network. "
                                     f"{download.offline_hint(dest.name)}")

    monkeypatch.setattr(download, "fetch", offline)
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path))
    with pytest.raises(download.DownloadError) as err:
        resnet20(pretrained=True)
    msg = str(err.value)
    assert str(tmp_path / "resnet20-12fca82f.th") in msg and "$LABKIT_DATA" in msg and "LABKIT_DATA=" in msg


def test_pretrained_download_false_never_fetches(tmp_path, monkeypatch):
    """As cifar10(download=False): a missing file raises FileNotFoundError saying where it looked
    and how to fetch it; a present file loads; fetch is never called."""
    from labkit import download

    def no_fetch(*args, **kwargs):
        raise AssertionError("download=False must not download")

    monkeypatch.setattr(download, "fetch", no_fetch)
    with pytest.raises(FileNotFoundError) as err:
        resnet20(pretrained=True, root=tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path.absolute() / models.CHECKPOINT_FILE) in msg and "the root= argument" in msg
    assert "download=False" in msg and "download=True" in msg and models.CHECKPOINT_URL in msg
    assert "LABKIT_DATA=" in msg
    assert list(tmp_path.iterdir()) == []

    src = random_net(10)
    path, digest = save_hashed(published_layout(src), tmp_path)
    monkeypatch.setattr(models, "CHECKPOINT_FILE", path.name)
    monkeypatch.setattr(models, "CHECKPOINT_SHA256_PREFIX", digest[:8])
    assert_same_state(resnet20(pretrained=True, root=tmp_path, download=False).eval(), src)
    # pretrained=False never looks for the file, whatever download says
    assert isinstance(resnet20(root=tmp_path / "nowhere", download=False), models.ResNet)


def test_pretrained_needs_ten_classes():
    with pytest.raises(ValueError, match="num_classes=100"):
        resnet20(pretrained=True, num_classes=100)


def test_pretrained_accuracy_on_test_subset(subset_root):
    from labkit.data import cifar10

    test = cifar10(subset_root, download=False, verbose=False).test
    assert len(test.labels) == 1017
    net = resnet20(pretrained=True, root=subset_root).eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test.labels), 256):
            logits = net(test.images[i:i + 256].float() / 255)
            correct += (logits.argmax(1) == test.labels[i:i + 256]).sum().item()
    assert correct == 932  # 91.64 %, as measured on the 1017-image subset (see data README)
