"""labkit.devices: the device choice and the number formats chosen by capability."""
import pytest
import torch

from labkit import devices
from labkit.devices import pick_device
from labkit.train import TrainConfig


def test_pick_device_prefers_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("LABKIT_DEVICE", "meta")
    assert pick_device("cpu") == torch.device("cpu")                  # the argument: the variable is not read
    monkeypatch.setenv("LABKIT_DEVICE", " cpu ")
    assert pick_device() == torch.device("cpu")
    monkeypatch.setenv("LABKIT_DEVICE", "gpu")
    with pytest.raises(ValueError, match=r"LABKIT_DEVICE.*'gpu'.*'cpu', 'cuda'"):
        pick_device()
    monkeypatch.setenv("LABKIT_DEVICE", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no usable CUDA"):
        pick_device()
    monkeypatch.delenv("LABKIT_DEVICE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")


def test_auto_precision_follows_the_device_capability(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "native_bf16", lambda device: True)
    assert devices.resolve_precision("auto", cpu) == "bf16"
    assert devices.describe(TrainConfig(), cpu) == "bf16 autocast, channels_last"
    monkeypatch.setattr(devices, "native_bf16", lambda device: False)
    assert devices.resolve_precision("auto", cpu) == "fp32"        # no slower laptop CPU
    assert devices.resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert devices.resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        devices.resolve_precision("fp16", cpu)
    assert devices.resolve_memory_format("auto", torch.device("mps")) == torch.contiguous_format


def test_autocast_is_off_for_fp32_and_on_in_the_dtype_asked():
    with devices.autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with devices.autocast(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        devices.autocast("cpu", "auto")             # resolve it first


def test_model_device_and_device_name():
    assert devices.model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    with pytest.raises(ValueError, match="no parameters"):
        devices.model_device(torch.nn.ReLU())
    assert devices.device_name("cpu").startswith("cpu (") and devices.device_name(None).startswith("numpy")


def test_the_meta_device_is_refused_by_name(monkeypatch):
    """meta tensors hold no values: a run there 'trains' and 'evaluates' without computing anything."""
    monkeypatch.setenv("LABKIT_DEVICE", "meta")
    with pytest.raises(ValueError, match=r"LABKIT_DEVICE = 'meta' is not supported; use 'cpu'"):
        pick_device()
    with pytest.raises(ValueError, match="'meta' is not supported"):
        pick_device("meta")
