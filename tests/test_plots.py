"""Plot helpers: the right panels, the data drawn is the data given, bad runs are refused."""
import matplotlib.pyplot as plt
import numpy as np
import pytest

from labkit import plots


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def fake_run(T=30, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return np.geomspace(10.0, 1e-3, T), rng.normal(size=(T, d))


def test_plot_runs_one_row_per_run_with_log_loss_and_every_weight():
    runs = {"a": fake_run(seed=0), "b": fake_run(seed=1), "c": fake_run(seed=2)}
    fig = plots.plot_runs(runs, target=np.zeros(5))
    axes = np.array(fig.axes[:6]).reshape(3, 2)
    for (label, (losses, weights)), (ax_l, ax_w) in zip(runs.items(), axes):
        assert ax_l.get_yscale() == "log" and label in ax_l.get_title()
        np.testing.assert_array_equal(ax_l.lines[0].get_ydata(), losses)
        np.testing.assert_array_equal(ax_l.lines[0].get_xdata(), np.arange(1, 31))
        drawn = [ln.get_ydata() for ln in ax_w.lines if len(ln.get_xdata()) == 30]
        assert len(drawn) == 5
        for j in range(5):
            np.testing.assert_array_equal(drawn[j], weights[:, j])


def test_plot_runs_single_run_is_side_by_side_and_steps_truncate():
    fig = plots.plot_runs({"gd": fake_run()}, steps=10)
    ax_l, ax_w = fig.axes[:2]
    assert ax_l.get_position().x0 < ax_w.get_position().x0  # one row, two columns
    assert len(ax_l.lines[0].get_xdata()) == 10


def test_plot_overlay_two_panels_one_style_per_run():
    runs = {"a": fake_run(seed=0), "b": fake_run(seed=1)}
    fig = plots.plot_overlay(runs, steps=20)
    ax_l, ax_w = fig.axes[:2]
    assert ax_l.get_yscale() == "log" and len(ax_l.lines) == 2
    styles = {ln.get_linestyle() for ln in ax_w.lines if len(ln.get_xdata()) == 20}
    assert len(styles) == 2


@pytest.mark.parametrize("runs", [{}, [fake_run()], {"a": (np.ones(3), np.ones((4, 5)))}])
def test_bad_runs_raise(runs):
    with pytest.raises(ValueError, match="run"):
        plots.plot_runs(runs)


def test_overlay_refuses_too_many_runs():
    with pytest.raises(ValueError, match="plot_runs"):
        plots.plot_overlay({str(i): fake_run(seed=i) for i in range(5)})
