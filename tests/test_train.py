"""The training loop, evaluation, callbacks, the CI profile's use, and what a run does when it goes
wrong: divergence, Ctrl-C, empty splits, resuming."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from labkit import settings
from labkit.data import CIFAR10, Split, shrink, split_validation, validation_from_test
from labkit.train import Callback, History, SaveBest, TrainConfig, evaluate, train


def toy_data(n_train=512, n_test=128, seed=0) -> CIFAR10:
    """Two classes a tiny net can tell apart: class 1 images are bright in the red channel."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        labels = torch.randint(0, 2, (n,), generator=g)
        images = torch.randint(0, 100, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        images[labels == 1, 0] += 120
        return Split(images, labels)

    return CIFAR10(train=split(n_train), test=split(n_test), classes=["dark", "red"])


def toy_tuned(**kwargs) -> CIFAR10:
    """toy_data with validation images: half of its test images (class-balanced, seed 0)."""
    return validation_from_test(toy_data(**kwargs))


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
    h = train(toy_net(), toy_tuned(n_train=300), epochs=3, batch_size=100, callbacks=[rec], progress=False)
    assert rec.calls == ["begin", "epoch 0", "epoch 1", "epoch 2", "end"]
    assert rec.steps == 3 * 3
    assert h.column("seen") == [0, 1, 2] and h.column("epoch") == [1, 2, 3]
    vals, accs = h.column("val_acc"), h.column("test_acc")
    assert h.best_epoch == 2 + int(np.argmax(vals[1:])) and h.best_acc == accs[h.best_epoch - 1]
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
    h = train(toy_net(), toy_tuned(), epochs=3, lr=0.05, batch_size=64,
              callbacks=[marker, SaveBest(path)], progress=False)
    saved = torch.load(path, weights_only=True)
    best = marker.weights[h.best_epoch - 1]
    assert h.best_epoch != 2
    assert all(torch.equal(saved[k], best[k]) for k in best)


def test_ci_profile_shrinks_epochs_and_the_data_it_is_given_visibly(monkeypatch):
    data = toy_data(n_train=2000)
    monkeypatch.setenv("LABKIT_PROFILE", "ci")
    ci = settings.profile()
    assert ci.epochs(20) == 2 and ci.epochs(10) == 1 and ci.epochs(3) == 1
    small = shrink(data, ci)
    assert len(small.train) == 1024 and torch.equal(small.train.images, data.train.images[:1024])
    assert small.test is data.test                       # evaluation is never shrunk
    monkeypatch.setenv("LABKIT_PROFILE", "full")
    full = settings.profile()
    assert full.epochs(20) == 20 and shrink(data, full) is data
    # the loop trains on what it is given: all 2000 images (validation comes from the test images)
    rec = Recorder()
    train(toy_net(), data, epochs=1, batch_size=100, callbacks=[rec], progress=False)
    assert rec.steps == 20


def test_bad_profile_and_bad_arguments_say_what_is_allowed(monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", "fast")
    with pytest.raises(ValueError, match="ci"):
        settings.profile()
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
    assert row == ["1*", "0.1235", "50.00%", "25.00%", "12.5"]   # the one epoch is the selected one


# --- what the loop reports: against a computation done here -----------------------------------------

class NoStep(torch.optim.SGD):
    """An optimizer that leaves the weights alone, so that every batch sees the same model."""

    @torch.no_grad()
    def step(self, closure=None):
        return None


def test_epoch_loss_and_train_accuracy_equal_a_direct_computation_with_unequal_batches():
    data = toy_data(n_train=250)
    net = toy_net()
    h = train(net, data, epochs=1, batch_size=100, augment=False, precision="fp32",
              optimizer=NoStep(net.parameters(), lr=0.1), progress=False)   # batches of 100, 100, 50
    X, y = data.train.images.float() / 255, data.train.labels
    with torch.no_grad():
        y_hat = net(X)
    assert h.records[0]["loss"] == pytest.approx(torch.nn.functional.cross_entropy(y_hat, y).item(), rel=1e-5)
    assert h.records[0]["train_acc"] == pytest.approx((y_hat.argmax(1) == y).float().mean().item(), abs=1e-9)
    assert 0.2 < h.records[0]["train_acc"] < 0.8        # neither trivial value: halving it would show


def test_the_steps_run_in_train_mode_even_if_the_model_came_in_eval_mode():
    class Mode(Callback):
        def __init__(self):
            self.modes = []

        def on_step_end(self, net):
            self.modes.append(net.training)

    net, mode = toy_net().eval(), Mode()
    train(net, toy_data(), epochs=2, batch_size=128, callbacks=[mode], progress=False)
    assert mode.modes and all(mode.modes)


def test_train_time_counts_the_steps_not_the_epoch_begin_work():
    class Slow(Callback):
        def on_epoch_begin(self, epoch, net, optimizer):
            import time
            time.sleep(1.0)

    h = train(toy_net(), toy_data(n_train=128), epochs=1, batch_size=64, callbacks=[Slow()], progress=False)
    r = h.records[0]
    assert r["time"] - r["train_time"] >= 1.0


class AutocastProbe(nn.Module):
    """Records, at every forward pass, whether CPU autocast is on and the conv weight's memory format."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, stride=4)
        self.fc = nn.Linear(2 * 8 * 8, 2)
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"),
                          self.conv.weight.is_contiguous(memory_format=torch.channels_last)))
        return self.fc(self.conv(x).flatten(1))


@pytest.mark.parametrize("precision, memory_format, dtype, cl", [
    ("fp32", "contiguous", False, False), ("bf16", "channels_last", torch.bfloat16, True),
    ("fp32", "auto", False, True)])
def test_training_steps_use_the_configured_precision_and_memory_format(precision, memory_format, dtype, cl):
    net = AutocastProbe()
    train(net, toy_data(n_train=128), epochs=1, batch_size=64, precision=precision,
          memory_format=memory_format, progress=False)
    steps = [s for s in net.seen if s[0]]            # forward passes in train mode
    evals = [s for s in net.seen if not s[0]]        # evaluation: always fp32
    assert len(steps) == 2 and all(s[1] == dtype and s[2] == cl for s in steps)
    assert evals and all(s[1] is False for s in evals)
    assert net.conv.weight.is_contiguous()           # the model comes back in the contiguous format


def test_evaluate_is_fp32_even_inside_an_autocast_region():
    net = AutocastProbe().eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        evaluate(net, toy_data().test)
    assert net.seen and all(s[1] is False for s in net.seen)


class LayoutProbe(AutocastProbe):
    """Also records whether the input is channels_last and inference mode is on."""

    def forward(self, x):
        self.layout = (x.is_contiguous(memory_format=torch.channels_last), torch.is_inference_mode_enabled(),
                       self.conv.weight.is_contiguous(memory_format=torch.channels_last))
        return super().forward(x)


def test_evaluate_runs_channels_last_in_inference_mode_and_gives_the_model_back_as_it_came():
    data = toy_data()
    net = LayoutProbe()
    acc = evaluate(net, data.test)
    assert net.layout == (True, True, True)                    # channels_last on the CPU, inference mode
    assert all(p.is_contiguous() for p in net.parameters())    # came contiguous, goes back contiguous
    net.fc(net.conv(data.test.images[:4].float()).flatten(1)).sum().backward()   # still trainable
    assert net.conv.weight.grad is not None
    net.to(memory_format=torch.channels_last)                  # as inside train(): left as it is
    assert evaluate(net, data.test) == acc and net.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_bf16_training_learns_the_toy_task_as_fp32_does():
    accs = {p: train(toy_net(), toy_data(), epochs=4, lr=0.05, batch_size=64, precision=p, progress=False).final_acc
            for p in ("fp32", "bf16")}
    assert accs["fp32"] > 0.9 and accs["bf16"] > 0.9


# --- configuration ---------------------------------------------------------------------------------

def test_config_states_the_course_setup_and_is_frozen():
    c = TrainConfig()
    assert (c.epochs, c.lr, c.momentum, c.weight_decay, c.batch_size, c.augment) == (20, 0.002, 0.875, 1e-4, 256, True)
    assert c.precision == "auto"
    assert not hasattr(c, "val_fraction")        # no hold-out from the training images the checkpoint saw
    with pytest.raises(Exception):
        c.lr = 0.1
    assert c.replace(seed=3).seed == 3 and c.seed == 0
    with pytest.raises(ValueError, match="unknown TrainConfig field.*'lr'"):
        c.replace(learning_rate=0.1)
    with pytest.raises(ValueError, match="unknown TrainConfig field.*'val_fraction'"):
        c.replace(val_fraction=0.1)
    for kwargs, word in [({"precision": "half"}, "precision.*'bf16'"),
                         ({"memory_format": "nhwc"}, "memory_format"), ({"augment": 1}, "augment"),
                         ({"momentum": -0.1}, "momentum")]:
        with pytest.raises(ValueError, match=word):
            TrainConfig(**kwargs)


def test_overrides_change_one_run_like_a_config_with_that_field():
    a, b = toy_net(), toy_net()
    ha = train(a, toy_data(), TrainConfig(epochs=1, batch_size=64, seed=1), progress=False)
    hb = train(b, toy_data(), TrainConfig(epochs=1, batch_size=64), seed=1, progress=False)
    assert ha.column("loss") == hb.column("loss")
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        train(toy_net(), toy_data(), epoch=1, progress=False)
    with pytest.raises(ValueError, match="config must be a labkit.train.TrainConfig, got dict"):
        train(toy_net(), toy_data(), {"epochs": 1}, progress=False)


def test_progress_mode_must_be_known(monkeypatch):
    monkeypatch.setenv("LABKIT_PROGRESS", "bars")
    with pytest.raises(ValueError, match=r"LABKIT_PROGRESS='bars'.*'text', 'off'"):
        train(toy_net(), toy_data(), epochs=1)


# --- selection on a validation split ---------------------------------------------------------------

def test_validation_split_is_class_balanced_disjoint_and_seeded():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    split = Split(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 3, 2, 2).contiguous(), labels)
    tr, va = split_validation(split, 0.1, seed=0)
    assert sorted(va.labels.tolist()) == [0] * 5 + [1] * 3 + [2] * 2
    ids_tr, ids_va = set(tr.images[:, 0, 0, 0].tolist()), set(va.images[:, 0, 0, 0].tolist())
    assert not ids_tr & ids_va and len(ids_tr | ids_va) == 100
    assert torch.equal(split_validation(split, 0.1, seed=0)[1].images, va.images)
    assert not torch.equal(split_validation(split, 0.1, seed=1)[1].images, va.images)
    assert split_validation(split, 0)[0] is split and len(split_validation(split, 0)[1]) == 0
    with pytest.raises(ValueError, match="fraction"):
        split_validation(split, 1.5)


def test_history_selects_on_validation_and_reports_the_test_accuracy_of_that_epoch():
    h = History([{"epoch": 1, "val_acc": 0.70, "test_acc": 0.80},
                 {"epoch": 2, "val_acc": 0.90, "test_acc": 0.75},
                 {"epoch": 3, "val_acc": 0.90, "test_acc": 0.85},    # a tie: the first is kept
                 {"epoch": 4, "val_acc": 0.99, "test_acc": 0.95, "eligible": False}])
    assert h.selected_on == "val_acc" and h.best_epoch == 2
    assert h.best_acc == 0.75 and h.best_val_acc == 0.90
    assert h.peak_test_acc == 0.85 and h.final_acc == 0.95
    assert "epoch 2 of 4 selected on validation accuracy (90.00%): test accuracy 75.00%" in h.summary()
    assert "course protocol (best test accuracy of any epoch, optimistic) 85.00%" in h.summary()
    assert h.table().splitlines()[3].startswith("2*")


def test_save_best_saves_the_epoch_the_history_selects(tmp_path):
    class Weights(Callback):
        def __init__(self):
            self.weights = []

        def on_epoch_end(self, epoch, net, record):
            self.weights.append({k: v.clone() for k, v in net.state_dict().items()})

    path, w = tmp_path / "best.pt", Weights()
    h = train(toy_net(), toy_tuned(), epochs=4, lr=0.02, batch_size=64, callbacks=[SaveBest(path), w],
              progress=False)
    vals = h.column("val_acc")
    assert h.best_epoch == 1 + int(np.argmax(vals))
    saved = torch.load(path, weights_only=True)
    assert all(torch.equal(saved[k], w.weights[h.best_epoch - 1][k]) for k in saved)


def test_selection_uses_the_validation_images_only_even_when_the_test_images_disagree(tmp_path):
    """The validation images here are the test images with every label flipped: the better the model
    gets on the test images, the worse on the validation images. The run must select (and SaveBest save)
    the epoch of the best validation accuracy, not the one of the best test accuracy."""
    data = toy_data()
    flipped = Split(data.test.images, 1 - data.test.labels)
    data = CIFAR10(data.train, data.test, data.classes, val=flipped)
    path, w = tmp_path / "best.pt", Weights()
    h = train(toy_net(), data, epochs=4, lr=0.05, batch_size=64, callbacks=[SaveBest(path), w], progress=False)
    vals, tests = h.column("val_acc"), h.column("test_acc")
    assert vals == pytest.approx([1 - t for t in tests], abs=1e-12)
    assert int(np.argmax(tests)) != int(np.argmax(vals))             # they disagree
    assert h.selected_on == "val_acc" and h.best_epoch == 1 + int(np.argmax(vals))
    assert h.best_acc == tests[h.best_epoch - 1] < h.peak_test_acc == max(tests)
    saved = torch.load(path, weights_only=True)
    assert all(torch.equal(saved[k], w.ends[h.best_epoch - 1][k]) for k in saved)


def test_without_validation_images_nothing_is_selected_and_the_last_epoch_is_reported(tmp_path):
    h = History([{"epoch": 1, "val_acc": None, "test_acc": 0.90},
                 {"epoch": 2, "val_acc": None, "test_acc": 0.70},
                 {"epoch": 3, "val_acc": None, "test_acc": 0.99, "eligible": False}])
    assert h.selected_on == "last" and h.best_epoch == 2            # the last eligible, never the test's best
    assert h.best_acc == 0.70 and h.peak_test_acc == 0.90 and math.isnan(h.best_val_acc)
    assert h.summary().startswith("no validation images, no selection: epoch 2 of 3 (the last eligible), "
                                  "test accuracy 70.00%")
    assert "course protocol (best test accuracy of any epoch, optimistic) 90.00%" in h.summary()
    # a run: no val_acc, SaveBest keeps the last epoch's weights whatever the test accuracies did
    path, w = tmp_path / "last.pt", Weights()
    run = train(toy_net(), toy_data(), epochs=3, lr=0.05, batch_size=64, callbacks=[SaveBest(path), w],
                progress=False)
    assert run.column("val_acc") == [None] * 3 and run.selected_on == "last" and run.best_epoch == 3
    assert run.best_acc == run.final_acc
    saved = torch.load(path, weights_only=True)
    assert all(torch.equal(saved[k], w.ends[-1][k]) for k in saved)


def test_each_epoch_records_its_evaluation_time_and_both_accuracies():
    data = toy_tuned()
    h = train(toy_net(), data, epochs=1, batch_size=64, progress=False)
    r = h.records[0]
    assert r["eval_time"] > 0 and r["train_time"] + r["eval_time"] <= r["time"]
    net = toy_net()
    h = train(net, data, epochs=1, batch_size=64, progress=False)
    assert h.records[0]["val_acc"] == evaluate(net, data.val) and h.records[0]["test_acc"] == evaluate(net, data.test)


# --- nothing lost: divergence, empty splits, Ctrl-C, resuming, atomic saves (issue 14) --------------

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from labkit.train import TrainingDiverged, TrainingInterrupted

TESTS = Path(__file__).resolve().parent


def weights(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("field", ["lr", "momentum", "weight_decay"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a finite number"):
        TrainConfig(**{field: value})
    with pytest.raises(ValueError, match=field):
        train(toy_net(), toy_data(), epochs=1, progress=False, **{field: value})


class Weights(Callback):
    """The weights at the end of every epoch."""

    def __init__(self):
        self.ends = []

    def on_epoch_end(self, epoch, net, record):
        self.ends.append(weights(net))


def test_a_diverging_run_stops_naming_epoch_and_step_with_the_last_finite_weights(tmp_path):
    class Explode(Callback):
        def on_epoch_begin(self, epoch, net, optimizer):
            if epoch == 1:                                   # the second epoch diverges
                for group in optimizer.param_groups:
                    group["lr"] = 1e30

    net, ends, best = toy_net(), Weights(), tmp_path / "best.pt"
    with pytest.raises(TrainingDiverged, match=r"non-finite .* at epoch 2, step \d+") as err:
        train(net, toy_data(), epochs=4, lr=0.05, batch_size=64, callbacks=[Explode(), ends, SaveBest(best)],
              progress=False)
    assert err.value.epoch == 2 and err.value.step >= 1
    assert [r["epoch"] for r in err.value.history.records] == [1]
    assert "start of epoch 2" in str(err.value)
    now = weights(net)
    assert all(torch.isfinite(v).all() for v in now.values())
    assert all(torch.equal(now[k], ends.ends[0][k]) for k in now)          # the end of epoch 1
    assert all(torch.isfinite(v).all() for v in torch.load(best, weights_only=True).values())


def test_a_run_diverging_in_its_first_epoch_gives_back_the_weights_it_came_with():
    net = toy_net()
    before = weights(net)
    with pytest.raises(TrainingDiverged, match="at epoch 1, step") as err:
        train(net, toy_data(), epochs=2, lr=1e30, batch_size=64, progress=False)
    assert err.value.history.records == []
    assert all(torch.equal(v, before[k]) for k, v in weights(net).items())


def test_empty_splits_are_refused_before_the_model_changes():
    data, net = toy_data(), toy_net()
    before = weights(net)
    with pytest.raises(ValueError, match="no training images"):
        train(net, CIFAR10(data.train[:0], data.test, data.classes), epochs=1, progress=False)
    with pytest.raises(ValueError, match="data.test holds no images"):
        train(net, CIFAR10(data.train, data.test[:0], data.classes), epochs=1, progress=False)
    with pytest.raises(ValueError, match="data.val holds no images"):
        train(net, CIFAR10(data.train, data.test, data.classes, val=data.test[:0]), epochs=1, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in weights(net).items())


CONFIG = dict(lr=0.05, batch_size=64, precision="fp32", memory_format="channels_last")


def test_a_run_resumed_from_its_checkpoint_equals_an_uninterrupted_one(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    straight = toy_net()
    ref = train(straight, toy_tuned(), epochs=4, progress=False, **CONFIG)
    first = train(toy_net(), toy_tuned(), epochs=2, checkpoint=ckpt, progress=False, **CONFIG)
    assert len(first.records) == 2
    class Resumed(Callback):
        def __init__(self):
            self.done = []

        def on_resume(self, history):
            self.done.append(len(history.records))

    net, save_best, resumed = toy_net(seed=5), SaveBest(tmp_path / "best.pt"), Resumed()  # the file's weights load
    h = train(net, toy_tuned(), epochs=4, checkpoint=ckpt, resume=True, callbacks=[save_best, resumed],
              progress=False, **CONFIG)
    assert resumed.done == [2]
    fresh = SaveBest(tmp_path / "other.pt")
    fresh.on_resume(first)
    assert fresh.best == max(first.column("val_acc"))
    assert h.column("epoch") == [1, 2, 3, 4] and h.column("loss") == ref.column("loss")
    assert h.column("test_acc") == ref.column("test_acc")
    assert all(torch.equal(v, straight.state_dict()[k]) for k, v in net.state_dict().items())
    assert save_best.best >= max(first.column("val_acc"))                 # knows the epochs done before
    with pytest.raises(ValueError, match="only epochs may change.*'lr'"):
        train(toy_net(), toy_tuned(), epochs=4, checkpoint=ckpt, resume=True, progress=False, **dict(CONFIG, lr=0.1))
    with pytest.raises(ValueError, match="other data.*'val': 64"):     # without the validation images
        train(toy_net(), toy_data(), epochs=4, checkpoint=ckpt, resume=True, progress=False, **CONFIG)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(toy_net(), toy_data(), checkpoint=tmp_path / "none.ckpt", resume=True, progress=False)


SIGINT_CHILD = """
import json, sys, time
sys.path.insert(0, {tests!r})
import torch
from test_train import toy_data, toy_net, weights, CONFIG
from labkit.train import Callback, TrainingInterrupted, train

class Slow(Callback):
    def __init__(self):
        self.ends = []
    def on_record(self, epoch, net, record):
        self.ends.append(weights(net))
        if epoch == 1:
            open({ready!r}, "w").close()          # two epochs done: the parent sends SIGINT
    def on_step_end(self, net):
        time.sleep(0.02)

net, slow = toy_net(), Slow()
try:
    train(net, toy_data(), epochs=200, callbacks=[slow], checkpoint={ckpt!r}, progress=False, **CONFIG)
except TrainingInterrupted as e:
    done = len(e.history.records)
    now = net.state_dict()
    print(json.dumps({{"done": done, "epoch": e.epoch, "message": str(e),
                      "keyboard": isinstance(e, KeyboardInterrupt),
                      "same": all(torch.equal(now[k], v.to(memory_format=torch.contiguous_format))
                                  for k, v in slow.ends[done - 1].items()),
                      "contiguous": all(p.is_contiguous() for p in net.parameters())}}))
"""


def test_ctrl_c_keeps_the_history_the_finished_weights_and_a_checkpoint_to_resume(tmp_path):
    ckpt, ready = tmp_path / "run.ckpt", tmp_path / "ready"
    code = SIGINT_CHILD.format(tests=str(TESTS), ready=str(ready), ckpt=str(ckpt))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), child.communicate()[1]
    time.sleep(0.1)                                          # into the third epoch's steps
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert out.strip(), err
    got = json.loads(out.strip().splitlines()[-1])
    done = got["done"]
    assert done >= 2 and got["epoch"] == done + 1 and got["keyboard"]
    assert got["same"] and got["contiguous"]                 # the last finished epoch's weights, contiguous
    assert f"weights at the end of epoch {done}" in got["message"] and "resume=True" in got["message"]
    # the checkpoint of the last finished epoch continues the run as if nothing happened
    resumed = train(toy_net(), toy_data(), epochs=done + 1, checkpoint=ckpt, resume=True, progress=False, **CONFIG)
    ref = train(toy_net(), toy_data(), epochs=done + 1, progress=False, **CONFIG)
    assert resumed.column("epoch") == list(range(1, done + 2))
    assert resumed.column("loss") == pytest.approx(ref.column("loss"), rel=1e-6)


FSIZE_CHILD = """
import os, resource, signal, sys
sys.path.insert(0, {tests!r})
from test_train import toy_data, toy_net
from labkit.train import SaveBest, train

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)        # a write past the limit fails with EFBIG
path = {path!r}
train(toy_net(), toy_data(), epochs=1, batch_size=64, callbacks=[SaveBest(path)], progress=False)
good = open(path, "rb").read()
resource.setrlimit(resource.RLIMIT_FSIZE, (len(good) // 2, resource.RLIM_INFINITY))
try:
    train(toy_net(seed=1), toy_data(), epochs=1, batch_size=64, callbacks=[SaveBest(path)], progress=False)
    print("saved")
except Exception as e:
    print("failed", type(e).__name__)
print("intact" if open(path, "rb").read() == good else "damaged")
print(sorted(os.listdir(os.path.dirname(path))))
"""


def test_save_best_that_fails_halfway_leaves_the_previous_best_intact(tmp_path):
    path = tmp_path / "best.pt"
    code = FSIZE_CHILD.format(tests=str(TESTS), path=str(path))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 3, run.stderr
    assert lines[0].startswith("failed") and lines[1] == "intact"
    assert lines[2] == "['best.pt']"                       # no temporary file left behind
    torch.load(path, weights_only=True)


# --- issue 27: a saved model is finite and whole; every error keeps the run's record -------------

class Gain(nn.Module):
    """Multiplies its input by ``gain``: set it to 1e25 and the next BatchNorm's variance overflows."""

    def __init__(self):
        super().__init__()
        self.register_buffer("gain", torch.ones(()))

    def forward(self, x):
        return x * self.gain


def bn_net(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(Gain(), nn.Conv2d(3, 4, 3, stride=4), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 2))


def finite_file(path) -> bool:
    return all(torch.isfinite(v).all() for v in torch.load(path, weights_only=True).values())


def test_a_running_variance_that_overflows_while_the_loss_stays_finite_stops_the_run(tmp_path):
    """The loss of a BatchNorm model stays finite when its batch variance is inf (the normalised
    activations are 0), but the running variance it keeps is inf: 'a run that succeeds at 12 %'."""
    class Overflow(Callback):
        def on_epoch_begin(self, epoch, net, optimizer):
            if epoch == 1:
                net[0].gain.fill_(1e25)

    net, ends, best, ckpt = bn_net(), Weights(), tmp_path / "best.pt", tmp_path / "run.ckpt"
    with pytest.raises(TrainingDiverged, match=r"end of epoch 2 the model's 2\.running_var hold inf or NaN "
                                               r"although the loss stayed finite") as err:
        train(net, toy_data(), epochs=3, lr=0.05, batch_size=64, callbacks=[Overflow(), ends, SaveBest(best)],
              checkpoint=ckpt, progress=False)
    assert err.value.epoch == 2 and err.value.step is None and err.value.tensors == ("2.running_var",)
    assert [r["epoch"] for r in err.value.history.records] == [1] and len(ends.ends) == 1   # nothing recorded
    assert finite_file(best) and torch.isfinite(net[2].running_var).all()
    assert torch.equal(net[2].running_var, ends.ends[0]["2.running_var"])
    assert len(torch.load(ckpt, weights_only=True)["records"]) == 1


def test_a_blow_up_on_an_epochs_last_step_is_neither_recorded_nor_saved(tmp_path):
    class BlowUp(Callback):            # the last step of epoch 2 leaves an inf weight (the loss was finite)
        def __init__(self):
            self.epoch, self.steps = 0, 0

        def on_epoch_begin(self, epoch, net, optimizer):
            self.epoch, self.steps = epoch, 0

        def on_step_end(self, net):
            self.steps += 1
            if self.epoch == 1 and self.steps == 8:             # 512 images, batches of 64
                with torch.no_grad():
                    net[0].weight[0, 0, 0, 0] = float("inf")

    net, ends, best, ckpt = toy_net(), Weights(), tmp_path / "best.pt", tmp_path / "run.ckpt"
    with pytest.raises(TrainingDiverged, match=r"end of epoch 2 the model's 0\.weight hold inf") as err:
        train(net, toy_data(), epochs=3, lr=0.05, batch_size=64, callbacks=[BlowUp(), ends, SaveBest(best)],
              checkpoint=ckpt, progress=False)
    assert [r["epoch"] for r in err.value.history.records] == [1]
    assert finite_file(best) and len(torch.load(ckpt, weights_only=True)["records"]) == 1
    assert all(torch.equal(v, ends.ends[0][k]) for k, v in weights(net).items())   # the end of epoch 1


def test_save_best_refuses_non_finite_weights_and_keeps_its_best():
    net, save_best = bn_net(), SaveBest("never.pt")
    net[2].running_var.fill_(float("inf"))
    with pytest.raises(ValueError, match=r"inf or NaN.*2\.running_var"):
        save_best.on_record(0, net, {"epoch": 1, "val_acc": 0.9, "test_acc": 0.9})
    assert save_best.best == -math.inf and not Path("never.pt").exists()   # the best moves once written


FULL_DISK_CHILD = """
import os, resource, signal, sys
sys.path.insert(0, {tests!r})
from test_train import toy_data, toy_net
from labkit.train import Callback, SaveBest, train

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)        # a write past the limit fails with EFBIG
path = {path!r}

class Limit(Callback):                                 # the disk fills up after the first save
    def on_epoch_begin(self, epoch, net, optimizer):
        if epoch == 1:
            resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) // 2, resource.RLIM_INFINITY))

good = None
try:
    train(toy_net(), toy_data(), epochs=3, batch_size=64, callbacks=[SaveBest(path), Limit()], progress=False)
except Exception as e:
    print(type(e).__name__, len(e.history.records), "no space left to write " + path in str(e))
print(sorted(os.listdir(os.path.dirname(path))))
"""


def test_every_error_train_raises_carries_the_history_of_the_finished_epochs(tmp_path):
    """A full disk in SaveBest (a real file-size limit) after one epoch; a failing callback."""
    path = tmp_path / "best.pt"
    run = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD.format(tests=str(TESTS), path=str(path))],
                         capture_output=True, text=True, timeout=300)
    assert run.stdout.strip().splitlines() == ["OSError 1 True", "['best.pt']"], run.stdout + run.stderr
    assert finite_file(path)

    class Fails(Callback):
        def on_record(self, epoch, net, record):
            if epoch == 1:
                raise ZeroDivisionError("a callback's bug")

    net, ends = toy_net(), Weights()
    with pytest.raises(ZeroDivisionError) as err:
        train(net, toy_data(), epochs=3, batch_size=64, callbacks=[ends, Fails()], progress=False)
    assert [r["epoch"] for r in err.value.history.records] == [1]
    assert all(torch.equal(v, ends.ends[0][k]) for k, v in weights(net).items())    # matches the History


def test_the_folders_of_save_best_and_the_checkpoint_are_checked_before_the_first_step(tmp_path):
    net = toy_net()
    before = weights(net)
    with pytest.raises(FileNotFoundError, match=r"SaveBest .*missing/best.pt: its folder .*missing does not exist"):
        train(net, toy_data(), epochs=1, callbacks=[SaveBest(tmp_path / "missing" / "best.pt")], progress=False)
    with pytest.raises(FileNotFoundError, match=r"checkpoint= .*missing/run.ckpt: its folder"):
        train(net, toy_data(), epochs=1, checkpoint=tmp_path / "missing" / "run.ckpt", progress=False)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        train(net, toy_data(), epochs=1, callbacks=[SaveBest(tmp_path)], progress=False)
    assert all(torch.equal(v, before[k]) for k, v in weights(net).items())


def test_a_refused_resume_loads_nothing_and_says_what_the_file_is(tmp_path):
    from labkit import checkpoints, prune
    from faults import flip_bit
    ckpt, best = tmp_path / "run.ckpt", tmp_path / "best.pt"
    pruned = toy_net()
    prune.prune_by_percentage(pruned, 0.5)
    train(pruned, toy_tuned(), epochs=1, checkpoint=ckpt, callbacks=[SaveBest(best)], progress=False, **CONFIG)
    dense = toy_net(seed=3)
    before = weights(dense)
    with pytest.raises(ValueError, match="cannot resume .* into this model .*nothing was loaded"):
        train(dense, toy_tuned(), epochs=2, checkpoint=ckpt, resume=True, progress=False, **CONFIG)
    with pytest.raises(ValueError, match=r"holds a best model \(train.SaveBest\), not a training checkpoint"):
        train(dense, toy_tuned(), epochs=2, checkpoint=best, resume=True, progress=False, **CONFIG)
    with pytest.raises(ValueError, match=r"other data: it was trained on images of fingerprint"):
        train(dense, toy_tuned(seed=1), epochs=2, checkpoint=ckpt, resume=True, progress=False, **CONFIG)
    with pytest.raises(ValueError, match=r"is a training checkpoint .*resume=True"):
        checkpoints.load(ckpt, toy_net())
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(ckpt.read_bytes())
    flip_bit(damaged, "data/0", byte=2)
    with pytest.raises(ValueError, match=rf"{damaged} is damaged"):
        train(dense, toy_tuned(), epochs=2, checkpoint=damaged, resume=True, progress=False, **CONFIG)
    damaged.write_bytes(ckpt.read_bytes()[:5000])
    with pytest.raises(ValueError, match=rf"{damaged} is not a readable training checkpoint.*truncated"):
        train(dense, toy_tuned(), epochs=2, checkpoint=damaged, resume=True, progress=False, **CONFIG)
    assert all(torch.equal(v, before[k]) for k, v in weights(dense).items())


def test_settings_that_float32_or_the_generator_cannot_hold_are_refused():
    with pytest.raises(ValueError, match="lr must be at most 3.403e\\+38"):
        TrainConfig(lr=1e300)
    with pytest.raises(ValueError, match="seed"):
        TrainConfig(seed=2**64)
    TrainConfig(seed=2**64 - 1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_is_refused_with_what_to_do(dtype):
    net, data = toy_net().to(dtype), toy_data()
    with pytest.raises(ValueError, match=rf"evaluate needs a float32 model.*{dtype}.*net.float\(\)"):
        evaluate(net, data.test)
    with pytest.raises(ValueError, match=r"train needs a float32 model.*precision="):
        train(net, data, epochs=1, progress=False)


def test_a_run_configured_with_numpy_numbers_resumes_from_its_checkpoint(tmp_path):
    """Issue 27, adversarial probe: TrainConfig accepts numpy numbers (np.float64 from a sweep's
    np.linspace), which the checkpoint stored as they were; torch.load(weights_only=True) refuses
    numpy scalars, so the run could never be resumed from the file it wrote every epoch."""
    ckpt = tmp_path / "run.ckpt"
    numpy_config = dict(CONFIG, lr=np.float64(CONFIG["lr"]), batch_size=np.int64(CONFIG["batch_size"]),
                        seed=np.uint64(0))   # torch.Generator raised its own "an integer is required"
    first = train(toy_net(), toy_tuned(), epochs=1, checkpoint=ckpt, progress=False, **numpy_config)
    h = train(toy_net(seed=5), toy_tuned(), epochs=2, checkpoint=ckpt, resume=True, progress=False, **numpy_config)
    assert h.column("epoch") == [1, 2] and h.records[0]["loss"] == first.records[0]["loss"]



def test_a_symbolic_link_loop_as_save_best_or_checkpoint_is_named_before_the_first_step(tmp_path):
    """Issue 27, adversarial probe: the folder check raised pathlib's own RuntimeError "Symlink
    loop from ..."."""
    loop = tmp_path / "loop.pt"
    loop.symlink_to(loop)
    net = toy_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for kwargs in (dict(callbacks=[SaveBest(loop)]), dict(checkpoint=loop), dict(checkpoint=loop, resume=True)):
        with pytest.raises(OSError, match=rf"{loop} cannot be written.*points back to itself.*nothing was trained"):
            train(net, toy_tuned(), epochs=1, progress=False, **kwargs, **CONFIG)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_a_folder_that_cannot_be_written_is_named_before_the_first_step():
    """Issue 27, adversarial probe: a read-only folder for SaveBest or checkpoint= failed after a whole
    epoch, naming a hidden temporary file. A real 0555 folder, as an unprivileged user (uid 65534 when
    the tests run as root)."""
    import os, shutil, subprocess, sys, tempfile
    from pathlib import Path
    folder = Path(tempfile.mkdtemp())
    try:
        os.chmod(folder, 0o555)
        tests = Path(__file__).parent
        drop = "import os\nos.setgid(65534)\nos.setuid(65534)\n" if os.geteuid() == 0 else ""
        code = (f"import sys\nsys.path.insert(0, {str(tests)!r})\nfrom test_train import *\n" + drop +
                f"for kw in (dict(checkpoint={str(folder / 'run.ckpt')!r}), dict(callbacks=[SaveBest({str(folder / 'b.pt')!r})])):\n"
                f"    net = toy_net(); before = [p.clone() for p in net.parameters()]\n"
                f"    try:\n        train(net, toy_tuned(), epochs=1, progress=False, **kw, **CONFIG)\n"
                f"    except PermissionError as e:\n"
                f"        print(e, all(torch.equal(a, b) for a, b in zip(before, net.parameters())))\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tests.parent)
        lines = done.stdout.splitlines()
        assert len(lines) == 2, done.stdout + done.stderr
        for line in lines:
            assert f"its folder {folder} is not writable" in line and "nothing was trained" in line, line
            assert line.endswith(" True") and ".part" not in line, line      # the model untouched
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder)
