"""labkit.checkpoints: one loader for pruned and/or quantized models (masks, quantizers, weights),
check-first (a failed load changes nothing), and saves that are atomic and always load back."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from labkit import checkpoints, models, prune, quant, structured
from faults import flip_bit, save_under_size_limit
from labkit.layers import prunable_layers
from test_prune import LAYERS, SmallNet, batch


def state_equal(a, b):
    """Equal state dicts, quantizers' extra state (dicts) included."""
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def pruned_quantized(seed=0) -> SmallNet:
    net = SmallNet(seed)
    prune.prune_by_percentage(net, 0.7)
    quant.set_bits(net, 3, symmetric=True, layers=["conv1", "conv2"])
    return net


def snapshot(net):
    """Everything a load could change: the state (weights, masks, quantizer settings), which
    layers hold which parametrizations, and the Parameter objects."""
    kinds = {name: [type(p).__name__ for p in m.parametrizations.weight]
             for name, m in net.named_modules() if parametrize.is_parametrized(m)}
    return copy.deepcopy(net.state_dict()), kinds, [id(p) for p in net.parameters()]


def assert_unchanged(net, before):
    state, kinds, params = snapshot(net)
    assert state_equal(state, before[0]) and kinds == before[1] and params == before[2]


# --- round trips ------------------------------------------------------------------------------

def test_round_trip_of_a_pruned_quantized_model(tmp_path):
    net = pruned_quantized()
    path = checkpoints.save(net, tmp_path / "pq.pt")
    assert path == tmp_path / "pq.pt"
    fresh = SmallNet(seed=3)
    assert checkpoints.load(path, fresh) is fresh
    assert state_equal(fresh.state_dict(), net.state_dict())
    assert [quant.bits_of(getattr(fresh, n)) for n in LAYERS] == [3, 3, None]
    assert quant.quantizer_of(fresh.conv1).symmetric and list(prune.masks(fresh)) == LAYERS
    X, _ = batch(2)
    assert torch.equal(fresh(X), net(X))


def test_net_none_is_a_fresh_resnet20_and_channel_pruned_ones_load_too(tmp_path):
    net = models.resnet20()
    prune.global_prune_by_percentage(net, 0.8)
    quant.set_bits(net, 4)
    checkpoints.save(net, tmp_path / "r.pt")
    loaded = checkpoints.load(tmp_path / "r.pt")
    assert type(loaded) is models.ResNet and state_equal(loaded.state_dict(), net.state_dict())
    assert [quant.bits_of(m) for _, m in prunable_layers(loaded)] == [None] + [4] * 18 + [None]
    small = structured.prune_channels(models.resnet20(), 0.5)
    prune.prune_by_percentage(small, 0.5)
    back = checkpoints.load(small.state_dict())
    assert structured.inner_widths(back) == structured.inner_widths(small)
    assert state_equal(back.state_dict(), small.state_dict())


def test_a_plain_state_dict_loads_and_a_mask_already_there_is_replaced():
    dense = SmallNet(seed=1)
    target = SmallNet(seed=2)
    checkpoints.load(dense.state_dict(), target)
    assert state_equal(target.state_dict(), dense.state_dict()) and prune.masks(target) == {}
    source, target = pruned_quantized(seed=4), SmallNet(seed=5)
    prune.prune_by_percentage(target, 0.2)              # another mask on every layer
    quant.set_bits(target, 6, layers=["conv1", "conv2"])
    checkpoints.load(source.state_dict(), target)
    assert state_equal(target.state_dict(), source.state_dict())
    assert all(len(getattr(target, n).parametrizations.weight) == k for n, k in zip(LAYERS, (2, 2, 1)))


# --- a failed load changes nothing (issue 14 #4) -----------------------------------------------

def broken_states():
    good = pruned_quantized().state_dict()
    missing = {k: v for k, v in good.items() if k != "conv2.bias"}
    extra = {**good, "conv3.weight": torch.zeros(2, 2)}
    shape = {**good, "fc.parametrizations.weight.original": torch.zeros(5, 7)}
    mask = {**good, "conv2.parametrizations.weight.0.mask": torch.ones(2, 2, dtype=torch.bool)}
    quantizer = {**good, "conv2.parametrizations.weight.1._extra_state":
                 {"bits": 99, "symmetric": False, "mask_aware": True}}
    everything = {**missing, "conv3.weight": torch.zeros(2, 2),
                  "fc.parametrizations.weight.original": torch.zeros(5, 7),
                  "conv1.parametrizations.weight.0.mask": torch.ones(2, 2, dtype=torch.bool)}
    return {"missing": (missing, ["missing keys", "conv2.bias"]),
            "extra": (extra, ["unexpected keys", "conv3.weight"]),
            "shape": (shape, ["shape mismatches", "fc.parametrizations.weight.original", "(5, 7)"]),
            "mask shape": (mask, ["conv2.parametrizations.weight.0.mask", "(6, 4, 3, 3)"]),
            "bad quantizer": (quantizer, ["bits must be None"]),
            "all at once": (everything, ["missing keys", "conv2.bias", "unexpected keys",
                                         "conv3.weight", "shape mismatches", "(5, 7)",
                                         "conv1.parametrizations.weight.0.mask", "(4, 3, 3, 3)"])}


@pytest.mark.parametrize("case", list(broken_states()))
@pytest.mark.parametrize("target", ["fresh", "pruned 0.9"])
def test_a_failed_load_lists_every_mismatch_and_changes_nothing(case, target):
    """load_pruned used to give the target new masks, quantizers and weights before torch's
    strict load raised (a 0.9-pruned model came out 50 % sparse and quantized)."""
    state, expected = broken_states()[case]
    net = SmallNet(seed=7)
    if target == "pruned 0.9":
        prune.prune_by_percentage(net, 0.9)
    before = snapshot(net)
    with pytest.raises(ValueError) as err:
        checkpoints.load(state, net)
    message = str(err.value)
    assert "nothing was changed" in message and all(e in message for e in expected), message
    assert_unchanged(net, before)
    if target == "pruned 0.9":
        assert prune.sparsity(net).total > 0.89


def test_a_failed_load_from_a_file(tmp_path):
    checkpoints.save(models.resnet20(num_classes=7), tmp_path / "seven.pt")
    net = models.resnet20()
    before = snapshot(net)
    with pytest.raises(ValueError, match=r"fc.weight: checkpoint \(7, 64\), model \(10, 64\)"):
        checkpoints.load(tmp_path / "seven.pt", net)
    assert_unchanged(net, before)
    (tmp_path / "cut.pt").write_bytes((tmp_path / "seven.pt").read_bytes()[:5000])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        checkpoints.load(tmp_path / "cut.pt", net)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoints.load(tmp_path / "absent.pt", net)
    with pytest.raises(ValueError, match="a state dict"):
        checkpoints.load(42, net)
    assert_unchanged(net, before)


# --- saves: they load back (issue 14 #1), and they are atomic (issue 14 #2) --------------------

class Reciprocal(nn.Module):
    def forward(self, W):
        return 1.0 / W


def test_save_refuses_what_load_could_not_restore(tmp_path):
    net = SmallNet()
    parametrize.register_parametrization(net.conv1, "weight", Reciprocal())
    with pytest.raises(ValueError, match="conv1: Reciprocal"):
        checkpoints.save(net, tmp_path / "x.pt")
    late = SmallNet()
    quant.set_bits(late, 4, layers=["fc"])
    parametrize.register_parametrization(late.fc, "weight", prune.Mask(torch.ones(5, 6, dtype=torch.bool)))
    with pytest.raises(ValueError, match="fc: Mask"):  # a mask after the quantizer: not restorable
        checkpoints.save(late, tmp_path / "x.pt")
    on_bias = SmallNet()                                 # a mask on a bias: load restores weights' only
    parametrize.register_parametrization(on_bias.fc, "bias", prune.Mask(torch.ones(5, dtype=torch.bool)))
    with pytest.raises(ValueError, match="fc.bias: parametrized"):
        checkpoints.save(on_bias, tmp_path / "x.pt")
    odd = SmallNet()                                     # a setting changed around Quantize's checks
    quant.set_bits(odd, 4, layers="conv2")
    quant.quantizer_of(odd.conv2).bits = 99
    with pytest.raises(ValueError, match=r"(?s)could not be loaded back.*conv2.*bits must be None"):
        checkpoints.save(odd, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []
    X, _ = batch(1)
    assert torch.isfinite(net(X)).all() and late(X).shape == (16, 5)   # the models still work


def test_a_failed_save_leaves_the_previous_file(tmp_path):
    """A real file-size limit (RLIMIT_FSIZE) in a subprocess: the save fails, the good file
    written before is intact and no temporary file is left."""
    path = tmp_path / "model.pt"
    small = pruned_quantized()
    checkpoints.save(small, path)
    good = path.read_bytes()
    done = save_under_size_limit(f"checkpoints.save(models.resnet20(), {str(path)!r})", 20_000,   # about 1.1 MB
                                 setup="from labkit import checkpoints, models\n")
    assert done.returncode == 3 and f"failed: OSError [Errno 28] no space left to write {path}" in done.stdout, \
        done.stdout + done.stderr                                   # not torch's inline_container.cc message
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert state_equal(checkpoints.load(path, SmallNet(seed=9)).state_dict(), small.state_dict())


def test_load_saved_refuses_a_missing_model_naming_the_lab_and_loads_nothing(tmp_path):
    """Issue 15: Lab 4 measured a stand-in when Lab 3's model was missing; now it is an error."""
    there = tmp_path / "lab2_best_sparse.pt"
    saved = models.resnet20()
    prune.prune_by_percentage(saved, 0.5)
    quant.set_bits(saved, 4)
    checkpoints.save(saved, there)
    sources = {"Lab 2 best": (there, "Lab 2, its last cell"),
               "Lab 3 (d)": (tmp_path / "lab3_d_4bit.pt", "Lab 3, part (d)")}
    with pytest.raises(FileNotFoundError, match=r"Lab 3 \(d\): .*lab3_d_4bit.pt \(saved by Lab 3, part \(d\)\)") as err:
        checkpoints.load_saved(sources)
    assert "Lab 2 best" not in str(err.value)
    loaded = checkpoints.load_saved({"Lab 2 best": sources["Lab 2 best"]})
    assert state_equal(loaded["Lab 2 best"].state_dict(), saved.state_dict())


# --- a saved model is finite and whole, and says what it holds (issue 27) ----------------------

def with_inf_running_var() -> nn.Module:
    net = models.resnet20()
    net.stage1[0].bn1.running_var[3] = float("inf")      # what a too-large learning rate leaves
    return net


def test_save_refuses_non_finite_tensors_by_name_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"inf or NaN.*stage1\.0\.bn1\.running_var"):
        checkpoints.save(with_inf_running_var(), tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_non_finite_tensors_by_name_and_changes_nothing(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(with_inf_running_var().state_dict(), path)    # written by another tool
    target = models.resnet20()
    before = snapshot(target)
    with pytest.raises(ValueError, match=r"non-finite.*stage1\.0\.bn1\.running_var"):
        checkpoints.load(path, target)
    with pytest.raises(ValueError, match=r"non-finite.*stage1\.0\.bn1\.running_var"):
        checkpoints.load(with_inf_running_var().state_dict(), target)
    assert_unchanged(target, before)


def test_a_flipped_bit_in_a_tensor_is_named_with_the_file_and_loads_nothing(tmp_path):
    """One exponent bit of one weight: torch.load reads it without a word; labkit checks the archive's CRC-32s."""
    path = checkpoints.save(pruned_quantized(), tmp_path / "pq.pt")
    flip_bit(path, "data/0", byte=3, bit=6)                  # the exponent of the first float32
    assert torch.load(path, weights_only=True) is not None   # torch itself does not notice
    target = SmallNet(seed=3)
    before = snapshot(target)
    with pytest.raises(ValueError, match=rf"{path}.* is damaged.*CRC-32"):
        checkpoints.load(path, target)
    assert_unchanged(target, before)
    with pytest.raises(ValueError, match=r"is damaged"):
        checkpoints.load_saved({"m": (path, "a test")})


def test_a_truncated_file_is_named_as_such(tmp_path):
    path = checkpoints.save(pruned_quantized(), tmp_path / "pq.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{path} is not a readable checkpoint.*truncated"):
        checkpoints.load(path, SmallNet())


def test_a_saved_file_says_what_it_holds(tmp_path, monkeypatch):
    from labkit import files
    monkeypatch.setenv("LABKIT_PROFILE", "ci")
    path = checkpoints.save(pruned_quantized(), tmp_path / "pq.pt", what="Lab 3 (e)")
    d = files.read_description(path)
    assert d["kind"] == "a model (checkpoints.save)" and d["what"] == "Lab 3 (e)" and d["bits"] == [3]
    assert d["sparsity"] == pytest.approx(0.7, abs=0.01) and d["profile"] == "ci" and d["edition"] == "course"
    assert d["labkit"] and d["fingerprint"] is None
    assert state_equal(checkpoints.load(path, SmallNet(seed=4)).state_dict(), pruned_quantized().state_dict())


def resnet(bits, sparsity=0.7):
    net = models.resnet20()
    prune.global_prune_by_percentage(net, sparsity)
    quant.set_bits(net, bits)
    return net


def test_load_saved_refuses_a_model_that_is_not_what_its_name_says(tmp_path):
    """A 3-bit 70 %-sparse model copied over lab3_d_4bit.pt is refused with both descriptions."""
    path = tmp_path / "lab3_d_4bit.pt"
    checkpoints.save(resnet(3), tmp_path / "lab3_d_3bit.pt")
    import shutil
    shutil.copy(tmp_path / "lab3_d_3bit.pt", path)
    with pytest.raises(ValueError, match=r"Lab 3 \(d\): .*lab3_d_4bit.pt holds a 3-bit model, 70.0% sparse.*"
                                         r"expected a 4-bit model"):
        checkpoints.load_saved({"Lab 3 (d)": (path, "Lab 3, part (d)")})
    checkpoints.save(resnet(4), path)
    assert quant.bits_of(checkpoints.load_saved({"d": (path, "Lab 3")})["d"].stage1[0].conv1) == 4


def test_load_saved_refuses_a_file_of_another_profile_edition_or_data(tmp_path, monkeypatch):
    from test_train import toy_data
    path = tmp_path / "lab2_best_sparse.pt"
    monkeypatch.setenv("LABKIT_PROFILE", "ci")
    checkpoints.save(resnet(4), path, data=toy_data(seed=0))
    sources = {"Lab 2 best": (path, "Lab 2")}
    checkpoints.load_saved(sources, data=toy_data(seed=0))            # the same run's data: loads
    with pytest.raises(ValueError, match=r"holds .*fingerprint [0-9a-f]{12}.*expected fingerprint [0-9a-f]{12}"):
        checkpoints.load_saved(sources, data=toy_data(seed=1))        # same counts, other images
    monkeypatch.setenv("LABKIT_PROFILE", "full")
    with pytest.raises(ValueError, match=r"profile ci.*expected profile full"):
        checkpoints.load_saved(sources)
    monkeypatch.setenv("LABKIT_PROFILE", "ci")
    monkeypatch.setenv("LABKIT_COURSE", "2024")
    with pytest.raises(ValueError, match=r"edition course.*expected edition 2024"):
        checkpoints.load_saved(sources)


def test_wrong_arguments_to_load_and_load_saved_are_named(tmp_path):
    """Issue 27, adversarial probe: Python's own AttributeError ('str' object has no attribute
    'named_modules') and unpacking errors ('too many values to unpack') instead of what to pass."""
    path = checkpoints.save(pruned_quantized(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="restores into a model .* got str"):
        checkpoints.load(path, "resnet20")
    for sources in ([path], {"a": str(path)}, {"a": (path,)}, {"a": (path, "Lab 3", 1)}):
        with pytest.raises(ValueError, match=r"load_saved takes \{label: \(path, what saves it\)\}"):
            checkpoints.load_saved(sources)
