"""The training loop, evaluation, callbacks, device choice and the CI profile."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from labkit import profile
from labkit.data import CIFAR10, Split
from labkit.train import Callback, History, SaveBest, evaluate, pick_device, train


def toy_data(n_train=512, n_test=128, seed=0) -> CIFAR10:
    """Two classes a tiny net can tell apart: class 1 images are bright in the red channel."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        labels = torch.randint(0, 2, (n,), generator=g)
        images = torch.randint(0, 100, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        images[labels == 1, 0] += 120
        return Split(images, labels)

    return CIFAR10(train=split(n_train), test=split(n_test), classes=["dark", "red"])


def toy_net(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))


class FixedLogits(nn.Module):
    """Predicts class 1 exactly for the images whose first pixel is odd."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):                       # x: (B, 3, 32, 32) in [0, 1]
        odd = (x[:, 0, 0, 0] * 255).round().long() % 2 == 1
        return torch.stack([(~odd).float(), odd.float()], dim=1) + 0 * self.dummy


def test_evaluate_matches_a_numpy_count_and_restores_mode():
    data = toy_data()
    net = FixedLogits().train()
    expected = np.mean((data.test.images[:, 0, 0, 0].numpy() % 2 == 1) == data.test.labels.numpy())
    assert evaluate(net, data.test, batch_size=50) == pytest.approx(expected, abs=0)
    assert net.training


def test_training_reduces_the_loss_and_learns_the_toy_task():
    history = train(toy_net(), toy_data(), epochs=4, lr=0.05, batch_size=64, progress=False)
    losses = history.column("loss")
    assert losses[-1] < 0.5 * losses[0]
    assert history.final_acc > 0.9


def test_same_seed_same_run_and_another_seed_another_run():
    runs = []
    for seed in (0, 0, 1):
        net = toy_net()
        h = train(net, toy_data(), epochs=2, lr=0.05, batch_size=64, seed=seed, progress=False)
        runs.append((h.column("loss"), torch.cat([p.detach().flatten() for p in net.parameters()])))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0]


class Recorder(Callback):
    def __init__(self):
        self.calls, self.steps = [], 0

    def on_train_begin(self, net, optimizer):
        self.calls.append("begin")

    def on_epoch_begin(self, epoch, net, optimizer):
        self.calls.append(f"epoch {epoch}")

    def on_step_end(self, net):
        self.steps += 1

    def on_epoch_end(self, epoch, net, record):
        record["eligible"] = epoch >= 1           # the first epoch does not count for the best
        record["seen"] = epoch

    def on_train_end(self, net):
        self.calls.append("end")


def test_callbacks_are_called_in_order_and_eligibility_limits_the_best():
    rec = Recorder()
    h = train(toy_net(), toy_data(n_train=300), epochs=3, batch_size=100, callbacks=[rec], progress=False)
    assert rec.calls == ["begin", "epoch 0", "epoch 1", "epoch 2", "end"]
    assert rec.steps == 3 * 3
    assert h.column("seen") == [0, 1, 2] and h.column("epoch") == [1, 2, 3]
    accs = h.column("test_acc")
    assert h.best_acc == max(accs[1:]) and h.best_epoch == 2 + int(np.argmax(accs[1:]))
    assert h.eligible_epochs == [2, 3]


def test_history_with_no_eligible_epoch_has_no_best():
    h = History([{"epoch": 1, "loss": 1.0, "test_acc": 0.5, "eligible": False}])
    assert math.isnan(h.best_acc) and h.best_epoch is None and h.final_acc == 0.5


def test_save_best_keeps_the_best_eligible_weights(tmp_path):
    path = tmp_path / "best.pt"

    class Marker(Callback):
        # marks epoch 2 as ineligible and records each epoch's weights
        def __init__(self):
            self.weights = []

        def on_epoch_end(self, epoch, net, record):
            record["eligible"] = epoch != 1
            self.weights.append({k: v.clone() for k, v in net.state_dict().items()})

    marker = Marker()
    h = train(toy_net(), toy_data(), epochs=3, lr=0.05, batch_size=64,
              callbacks=[marker, SaveBest(path)], progress=False)
    saved = torch.load(path, weights_only=True)
    best = marker.weights[h.best_epoch - 1]
    assert h.best_epoch != 2
    assert all(torch.equal(saved[k], best[k]) for k in best)


def test_ci_profile_trains_on_fewer_images_and_shrinks_epochs(monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", "ci")
    assert profile.epochs(20) == 2 and profile.epochs(10) == 1 and profile.epochs(3) == 1
    rec = Recorder()
    train(toy_net(), toy_data(n_train=2000), epochs=1, batch_size=256, callbacks=[rec], progress=False)
    assert rec.steps == math.ceil(profile.train_samples() / 256)
    monkeypatch.setenv("LABKIT_PROFILE", "full")
    assert profile.epochs(20) == 20 and profile.train_samples() is None


def test_bad_profile_and_bad_arguments_say_what_is_allowed(monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", "fast")
    with pytest.raises(ValueError, match="ci"):
        profile.current()
    monkeypatch.delenv("LABKIT_PROFILE")
    bad = [({"epochs": -1}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"batch_size": True}, "batch_size"),
           ({"lr": 0.0}, "lr"), ({"lr": None}, "lr")]
    for kwargs, word in bad:
        with pytest.raises(ValueError, match=word):
            train(toy_net(), toy_data(), progress=False, **kwargs)
    with pytest.raises(ValueError, match="whole dataset"):
        train(toy_net(), toy_data().train, progress=False)
    with pytest.raises(ValueError, match="data.test"):
        evaluate(toy_net(), toy_data())


def test_save_best_sees_eligibility_whatever_the_callback_order(tmp_path):
    """A callback listed after SaveBest may still mark an epoch ineligible: SaveBest must respect it."""
    class LateMarker(Callback):
        def __init__(self):
            self.weights = []

        def on_epoch_end(self, epoch, net, record):
            record["eligible"] = epoch == 0          # only the first epoch counts
            self.weights.append({k: v.clone() for k, v in net.state_dict().items()})

    path, marker = tmp_path / "best.pt", LateMarker()
    h = train(toy_net(), toy_data(), epochs=3, lr=0.05, batch_size=64,
              callbacks=[SaveBest(path), marker], progress=False)
    accs = h.column("test_acc")
    assert max(accs[1:]) > accs[0]                   # later epochs are better, but not eligible
    saved = torch.load(path, weights_only=True)
    assert h.best_epoch == 1
    assert all(torch.equal(saved[k], marker.weights[0][k]) for k in saved)


def test_history_table_formats_fractions_as_percent_and_the_rest_as_numbers():
    h = History([{"epoch": 1, "loss": 0.123456, "test_acc": 0.5, "sparsity": 0.25, "time": 12.5}])
    row = h.table("loss", "test_acc", "sparsity", "time").splitlines()[2].split()
    assert row == ["1", "0.1235", "50.00%", "25.00%", "12.5"]


def test_pick_device_prefers_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("LABKIT_DEVICE", "meta")
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device() == torch.device("meta")
    monkeypatch.delenv("LABKIT_DEVICE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
