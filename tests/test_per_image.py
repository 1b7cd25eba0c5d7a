"""Per-image correctness for the paired statistics: ``evaluate(..., per_image=True)``, what ``train``
records every epoch (kept through a checkpoint), ``History.best_correct`` / ``History.correct``, and
``stats.mcnemar`` / ``stats.compare_seeds`` on the recorded arrays. What was printed before is printed
the same: the table, the summary and the repr of a run, checked against the text of the code before."""
import math

import numpy as np
import pytest
import torch

from labkit import stats
from labkit.data import CIFAR10
from labkit.train import Callback, History, evaluate, train

from test_train import CONFIG, FixedLogits, toy_data, toy_net, toy_tuned


def plain_correct(net, split, chunk=1) -> np.ndarray:
    """The independent reference: a plain loop over the images (``chunk`` at a time: 1, or a few for the
    ResNet-20 on a busy CPU), contiguous fp32, no labkit batching, one Python bool per image."""
    was_training = net.training
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(split), chunk):
            x = split.images[i:i + chunk].float() / 255         # (chunk, 3, 32, 32)
            out += [int(p) == int(y) for p, y in zip(net(x).argmax(dim=1), split.labels[i:i + chunk])]
    net.train(was_training)
    return np.array(out, dtype=bool)


def test_evaluate_per_image_matches_a_plain_loop_on_a_tiny_model():
    data, net = toy_data(n_test=203), toy_net(seed=3).train()    # 203: the last of 5 batches holds 3 images
    got = evaluate(net, data.test, batch_size=50, per_image=True)
    expected = plain_correct(net, data.test)
    assert isinstance(got, np.ndarray) and got.dtype == bool and got.shape == (203,)
    assert 0 < expected.sum() < 203                         # both outcomes occur: a shift or a flip would show
    np.testing.assert_array_equal(got, expected)
    assert got.mean() == evaluate(net, data.test, batch_size=50) == evaluate(net, data.test)   # exactly
    assert net.training                                     # the mode is restored, as for the accuracy
    with pytest.raises(ValueError, match="per_image must be True or False"):
        evaluate(net, data.test, per_image=1)


def test_evaluate_per_image_matches_a_plain_loop_on_the_pretrained_resnet20(data_root):
    from labkit.data import cifar10
    from labkit.models import resnet20

    test = cifar10(data_root, download=False, verbose=False).test[:300]
    net = resnet20(pretrained=True, root=data_root)
    got = evaluate(net, test, batch_size=128, per_image=True)   # 3 batches, the last one partial
    expected = plain_correct(net, test, chunk=20)
    assert got.shape == (300,) and 0.8 < expected.mean() < 1   # a trained model, with a few errors
    np.testing.assert_array_equal(got, expected)
    assert got.mean() == evaluate(net, test)


class Independent(Callback):
    """Evaluates the test images per image itself at the end of every epoch; eligible: the given epochs."""

    def __init__(self, test, eligible=None):
        self.test, self.eligible, self.seen = test, eligible, {}

    def on_epoch_end(self, epoch, net, record):
        if self.eligible is not None:
            record["eligible"] = epoch + 1 in self.eligible

    def on_record(self, epoch, net, record):
        self.seen[epoch + 1] = plain_correct(net, self.test)


def test_train_records_every_epochs_per_image_correctness_and_the_selected_one():
    data = toy_tuned(n_test=246)
    assert len(data.test) == 123                            # not a multiple of 8: packbits pads the last byte
    check = Independent(data.test, eligible={1, 3})
    h = train(toy_net(), data, epochs=4, callbacks=[check], progress=False, **dict(CONFIG, lr=0.01))
    for r in h.records:
        got = h.correct(r["epoch"])
        np.testing.assert_array_equal(got, check.seen[r["epoch"]])
        assert got.mean() == r["test_acc"]
        assert r["test_correct"]["images"] == 123 and len(r["test_correct"]["bits"]) == 16   # 8 images a byte
    assert h.best_epoch in (1, 3)
    np.testing.assert_array_equal(h.best_correct, check.seen[h.best_epoch])
    assert h.best_correct.mean() == h.best_acc
    others = [e for e in (1, 2, 3, 4) if e != h.best_epoch]
    assert any(not np.array_equal(h.best_correct, h.correct(e)) for e in others)   # another epoch would show
    part = History(h.records[:2])                           # as Lab 3 (f) slices a run's first epochs
    np.testing.assert_array_equal(part.best_correct, h.correct(1))
    with pytest.raises(ValueError, match="no epoch 9"):
        h.correct(9)


def test_history_says_when_it_has_no_per_image_correctness():
    old = History([{"epoch": 1, "loss": 1.0, "val_acc": 0.5, "test_acc": 0.5}])   # records before per-image
    with pytest.raises(ValueError, match="holds no per-image correctness.*per_image=True"):
        old.best_correct
    none_eligible = History([{"epoch": 1, "loss": 1.0, "val_acc": 0.5, "test_acc": 0.5, "eligible": False}])
    with pytest.raises(ValueError, match="no epoch is eligible"):
        none_eligible.best_correct


def test_a_resumed_run_keeps_the_per_image_correctness(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    ref = train(toy_net(), toy_tuned(), epochs=4, progress=False, **CONFIG)
    train(toy_net(), toy_tuned(), epochs=2, checkpoint=ckpt, progress=False, **CONFIG)
    saved = torch.load(ckpt, weights_only=True)["records"]   # loads as plain data: no pickled numpy
    assert [r["test_correct"] for r in saved] == [r["test_correct"] for r in ref.records[:2]]
    h = train(toy_net(seed=5), toy_tuned(), epochs=4, checkpoint=ckpt, resume=True, progress=False, **CONFIG)
    for e in (1, 2, 3, 4):
        np.testing.assert_array_equal(h.correct(e), ref.correct(e))
    np.testing.assert_array_equal(h.best_correct, ref.best_correct)
    assert h.column("test_correct") == ref.column("test_correct")


# What the code before per-image correctness printed for these runs (labkit at 55cdaa4): FixedLogits's
# predictions are fixed, so every accuracy is exact and the losses are the same on every machine.
BEFORE = {
    "table": 'epoch    loss  val_acc  test_acc\n-----  ------  -------  --------\n1*     0.8035   51.56%    56.25%\n'
             '2      0.8445   51.56%    56.25%\n3      0.8113   51.56%    56.25%',
    "table_keys": 'epoch    loss  train_acc  sparsity  test_acc\n-----  ------  ---------  --------  --------\n'
                  '1*     0.8035     50.98%     0.00%    56.25%\n2      0.8445     46.88%    25.00%    56.25%\n'
                  '3      0.8113     50.20%    50.00%    56.25%',
    "summary": 'epoch 1 of 3 selected on validation accuracy (51.56%): test accuracy 56.25%; course protocol (best '
               'test accuracy of any epoch, optimistic) 56.25%; final 56.25%',
    "repr": "History(records=[{'epoch': 1, 'loss': 0.0, 'train_acc': 0.509765625, 'train_time': 0.0, 'val_acc': "
            "0.515625, 'test_acc': 0.5625, 'eval_time': 0.0, 'time': 0.0, 'sparsity': 0.0, 'eligible': True}, "
            "{'epoch': 2, 'loss': 0.0, 'train_acc': 0.46875, 'train_time': 0.0, 'val_acc': 0.515625, 'test_acc': "
            "0.5625, 'eval_time': 0.0, 'time': 0.0, 'sparsity': 0.25, 'eligible': False}, {'epoch': 3, 'loss': "
            "0.0, 'train_acc': 0.501953125, 'train_time': 0.0, 'val_acc': 0.515625, 'test_acc': 0.5625, "
            "'eval_time': 0.0, 'time': 0.0, 'sparsity': 0.5, 'eligible': True}])",
    "table_last": 'epoch    loss  val_acc  test_acc\n-----  ------  -------  --------\n1      0.8035             53.91%\n'
                  '2*     0.8445             53.91%',
    "summary_last": 'no validation images, no selection: epoch 2 of 2 (the last eligible), test accuracy 53.91%; '
                    'course protocol (best test accuracy of any epoch, optimistic) 53.91%',
}


class Mark(Callback):
    def on_epoch_end(self, epoch, net, record):
        record["sparsity"] = 0.25 * epoch
        record["eligible"] = epoch != 1


def test_the_printed_table_summary_and_repr_of_a_run_are_as_before():
    h = train(FixedLogits(), toy_tuned(), epochs=3, callbacks=[Mark()], progress=False, **CONFIG)
    assert h.table() == BEFORE["table"]
    assert h.table("loss", "train_acc", "sparsity", "test_acc") == BEFORE["table_keys"]
    assert h.summary() == BEFORE["summary"]
    fixed = History([{k: 0.0 if k == "loss" or "time" in k else v for k, v in r.items()} for r in h.records])
    assert all("test_correct" in r for r in fixed.records)   # held, and not printed
    assert repr(fixed) == BEFORE["repr"]
    h = train(FixedLogits(), toy_data(), epochs=2, progress=False, **CONFIG)
    assert h.table() == BEFORE["table_last"] and h.summary() == BEFORE["summary_last"]


def test_mcnemar_and_compare_seeds_run_on_the_recorded_arrays():
    data = toy_tuned(n_test=256)
    runs = {lr: [train(toy_net(seed=s), data, epochs=2, seed=s, progress=False, **dict(CONFIG, lr=lr))
                 for s in (0, 1)] for lr in (0.05, 0.002)}
    a, b = runs[0.05][0], runs[0.002][0]
    paired = stats.mcnemar("lr 0.05", a.best_correct, "lr 0.002", b.best_correct)
    assert paired.n == len(data.test) and paired.a_acc == a.best_acc and paired.b_acc == b.best_acc
    assert paired.disagreements == int((a.best_correct != b.best_correct).sum()) > 0
    assert "lr 0.05" in str(paired)
    seeds = stats.compare_seeds("lr 0.05", [h.best_correct for h in runs[0.05]],
                                "lr 0.002", [h.best_correct for h in runs[0.002]])
    assert seeds.images == len(data.test)
    expected = np.mean([h.best_acc for h in runs[0.05]]) - np.mean([h.best_acc for h in runs[0.002]])
    assert math.isclose(seeds.diff, expected, abs_tol=1e-12)
