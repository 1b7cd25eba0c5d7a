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


# --- Lab 1: the zoom on the weights near 0 ---------------------------------------------------------

def lab1_pair(lam=2.0, steps=200):
    from labkit import sparse_linear as sl

    return {"subgradient": sl.optimize("l1", lam=lam, lr=0.02, steps=steps),
            "proximal": sl.optimize("proximal", lam=lam, lr=0.02, steps=steps)}


def test_plot_overlay_zooms_on_the_subgradient_oscillation():
    from labkit import sparse_linear as sl

    runs = lab1_pair()
    fig = plots.plot_overlay(runs, target=sl.W_STAR)
    assert len(fig.axes) == 3
    ax_w, ax_z = fig.axes[1], fig.axes[2]
    # auto height: 1.2 x the largest |w_j| over steps 101..200 of the elements whose target is 0
    zero = sl.W_STAR == 0
    h = 1.2 * max(np.abs(W[100:, zero]).max() for _, W in runs.values())
    assert ax_z.get_ylim() == pytest.approx((-h, h))
    assert ax_z.get_xlim() == (101, 200)
    drawn = [ln for ln in ax_z.lines if len(ln.get_xdata()) == 100]
    assert len(drawn) == 2 * 5
    for k, (_, W) in enumerate(runs.values()):
        for j in range(5):
            np.testing.assert_array_equal(drawn[5 * k + j].get_xdata(), np.arange(101, 201))
            np.testing.assert_array_equal(drawn[5 * k + j].get_ydata(), W[100:, j])
    # what the zoom is for: the subgradient's zero-target weights flip sign within the panel
    sub = np.concatenate([ln.get_ydata() for ln in drawn[:5]]).reshape(5, 100)[zero]
    assert (np.diff(np.sign(sub), axis=1) != 0).sum() > 50 and np.abs(sub).max() < h
    # ... which the weights panel (y-span about 4) shows 10x smaller or less; its box is outlined
    lo, hi = ax_w.get_ylim()
    assert 2 * h * 10 <= hi - lo
    (box,) = ax_w.patches
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == pytest.approx((101, -h, 99, 2 * h))


def test_plot_overlay_zoom_left_out_when_it_would_not_magnify():
    from labkit import sparse_linear as sl

    early = {"projected": sl.optimize("projected", lr=0.02, steps=200, k=2),
             "trimmed": sl.optimize("trimmed_l1", lam=1.0, lr=0.02, steps=200, k=2)}
    assert len(plots.plot_overlay(early, steps=20, target=sl.W_STAR).axes) == 2  # w_1 ~ 0.6 late
    assert len(plots.plot_overlay(lab1_pair()).axes) == 2                       # no target: no auto
    assert len(plots.plot_overlay(lab1_pair(), target=sl.W_STAR, zoom=None).axes) == 2


def test_plot_overlay_explicit_zoom_on_truncated_steps():
    runs = {"a": fake_run(T=31, seed=0), "b": fake_run(T=31, seed=1)}
    fig = plots.plot_overlay(runs, steps=21, zoom=0.5)
    ax_z = fig.axes[2]
    assert ax_z.get_ylim() == (-0.5, 0.5) and ax_z.get_xlim() == (11, 21)
    first = [ln for ln in ax_z.lines if len(ln.get_xdata()) == 11][0]
    np.testing.assert_array_equal(first.get_xdata(), np.arange(11, 22))
    np.testing.assert_array_equal(first.get_ydata(), runs["a"][1][10:21, 0])


@pytest.mark.parametrize("zoom", [0, -0.1, float("nan"), "big", True])
def test_plot_overlay_bad_zoom(zoom):
    with pytest.raises(ValueError, match="zoom must be 'auto', None or a half-height > 0"):
        plots.plot_overlay({"a": fake_run()}, zoom=zoom)


# --- Lab 2: accuracy against the fraction pruned ----------------------------------------------------

def test_plot_accuracy_vs_sparsity_draws_the_given_points_in_order():
    accuracy = {0.8: 0.1003, 0.4: 0.8874, 0.6: 0.7226}        # not sorted on purpose
    fig = plots.plot_accuracy_vs_sparsity(accuracy, dense=0.9164, title="one-shot")
    ax = fig.axes[0]
    curve, dense = ax.lines
    np.testing.assert_allclose(curve.get_xdata(), [40, 60, 80])
    np.testing.assert_allclose(curve.get_ydata(), [88.74, 72.26, 10.03])
    np.testing.assert_allclose(dense.get_ydata(), [91.64, 91.64])
    assert ax.get_title() == "one-shot" and "%" in ax.get_xlabel() and "%" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pruned, no fine-tuning", "dense (91.64%)"]
    assert len(plots.plot_accuracy_vs_sparsity({0.5: 0.5}).axes[0].lines) == 1   # no dense line


@pytest.mark.parametrize("accuracy", [{}, [0.9, 0.8]])
def test_plot_accuracy_vs_sparsity_bad_input(accuracy):
    with pytest.raises(ValueError, match="accuracy must be a non-empty dict"):
        plots.plot_accuracy_vs_sparsity(accuracy)


# --- Lab 2: accuracy per epoch -----------------------------------------------------------------------

def history(test, val=None, eligible_from=1):
    """A History with the given per-epoch accuracies; epochs before ``eligible_from`` not eligible."""
    from labkit.train import History

    val = test if val is None else val
    return History(records=[{"epoch": e, "loss": 1.0 / e, "train_acc": 0.5, "val_acc": v, "test_acc": t,
                             "eligible": e >= eligible_from}
                            for e, (t, v) in enumerate(zip(test, val), start=1)])


def artists(ax):
    """The line plots of plot_histories sorted by kind: curves, filled, hollow, stars."""
    kinds = {"curve": [], "filled": [], "hollow": [], "star": []}
    for ln in ax.lines:
        if ln.get_marker() == "*":
            kinds["star"].append(ln)
        elif ln.get_marker() == "o":
            kinds["hollow" if ln.get_markerfacecolor() == "none" else "filled"].append(ln)
        elif ln.get_linestyle() == "-":
            kinds["curve"].append(ln)
    return kinds


def xy(line):
    return np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)


def at(star):
    """(epoch, accuracy) of a one-point line."""
    (x,), (y,) = xy(star)
    return float(x), round(float(y), 9)


TEST = [0.50, 0.60, 0.70, 0.74, 0.80, 0.72]   # the best test accuracy is at epoch 5 ...
VAL = [0.55, 0.65, 0.75, 0.82, 0.78, 0.76]    # ... the best validation accuracy at epoch 4


def test_plot_histories_one_run_markers_and_the_selected_epoch():
    h = history(TEST, VAL, eligible_from=3)
    assert h.best_epoch == 4                    # selected on validation, among epochs 3..6
    fig = plots.plot_histories({"(d)": h}, dense=0.9164)
    ax = fig.axes[0]
    a = artists(ax)
    x, y = xy(a["curve"][0])
    np.testing.assert_array_equal(x, [1, 2, 3, 4, 5, 6])
    np.testing.assert_allclose(y, 100 * np.array(TEST))
    np.testing.assert_array_equal(xy(a["filled"][0])[0], [3, 4, 5, 6])
    np.testing.assert_array_equal(xy(a["hollow"][0])[0], [1, 2])
    np.testing.assert_allclose(xy(a["hollow"][0])[1], [50, 60])
    (star,) = a["star"]
    assert at(star) == (4, 74.0)  # epoch 4's TEST accuracy, not the peak at 5
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "(d) (test 74.00% at selected epoch 4)"
    assert "dense (91.64%)" in legend
    (dense,) = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    np.testing.assert_allclose(dense.get_ydata(), [91.64, 91.64])
    assert any("not eligible" in t and "before the target sparsity" in t for t in legend)
    assert any(t.startswith("selected epoch (best validation accuracy)") for t in legend)
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "test accuracy (%)" and ax.get_title()


def test_plot_histories_stars_whatever_epoch_the_history_selected():
    from labkit.train import History

    class Pinned(History):                      # selection is History's business, not the plot's
        best_epoch = 2

    h = Pinned(records=history(TEST, VAL).records)
    (star,) = artists(plots.plot_histories({"run": h}).axes[0])["star"]
    assert at(star) == (2, 60.0)


def test_plot_histories_validation_metric_and_no_hollow_key_when_all_eligible():
    ax = plots.plot_histories({"run": history(TEST, VAL)}, metric="val_acc").axes[0]
    a = artists(ax)
    np.testing.assert_allclose(xy(a["curve"][0])[1], 100 * np.array(VAL))
    assert at(a["star"][0]) == (4, 82.0)
    assert a["hollow"] == [] or len(a["hollow"][0].get_xdata()) == 0
    assert not any("not eligible" in t.get_text() for t in ax.get_legend().get_texts())
    assert ax.get_ylabel() == "validation accuracy (%)"


@pytest.mark.parametrize("band", ["range", "std"])
def test_plot_histories_seeds_mean_band_and_each_seeds_selection(band):
    tests = [TEST, [0.52, 0.58, 0.71, 0.70, 0.77, 0.79], [0.49, 0.63, 0.66, 0.75, 0.74, 0.73]]
    vals = [VAL, [0.5, 0.6, 0.7, 0.71, 0.72, 0.8], [0.5, 0.6, 0.9, 0.7, 0.7, 0.7]]
    seeds = [history(t, v, eligible_from=3) for t, v in zip(tests, vals)]
    assert [h.best_epoch for h in seeds] == [4, 6, 3]
    ax = plots.plot_histories({"(c)": seeds, "one": history(TEST)}, band=band).axes[0]
    a = artists(ax)
    acc = 100 * np.array(tests)                                   # (seeds, epochs)
    np.testing.assert_allclose(xy(a["curve"][0])[1], acc.mean(axis=0))
    np.testing.assert_allclose(xy(a["hollow"][0])[1], acc.mean(axis=0)[:2])
    # the band: at every epoch, from min to max (or mean -+ sample std) over the seeds
    (band_poly,) = ax.collections
    verts = band_poly.get_paths()[0].vertices
    if band == "range":
        lo, hi = acc.min(axis=0), acc.max(axis=0)
    else:
        sd = np.array([np.sqrt(((c - c.mean()) ** 2).sum() / 2) for c in acc.T])
        lo, hi = acc.mean(axis=0) - sd, acc.mean(axis=0) + sd
    for e in range(6):
        ys = verts[np.isclose(verts[:, 0], e + 1), 1]
        assert ys.min() == pytest.approx(lo[e]) and ys.max() == pytest.approx(hi[e])
    # one star per seed, at that seed's selected epoch and value, and one for the single run
    assert sorted(at(s) for s in a["star"][:3]) == [(3, 66.0), (4, 74.0), (6, 79.0)]
    assert at(a["star"][3]) == (5, 80.0)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    chosen = 100 * np.array([0.74, 0.79, 0.66])                  # test accuracy at epochs 4, 6, 3
    assert legend[0].startswith("(c) (test ") and legend[0].endswith(" at the selected epochs, 3 seeds)")
    assert f"{chosen.mean():.2f} ± {chosen.std(ddof=1):.2f}" in legend[0]
    assert any(t.startswith("band: ") for t in legend) and any("one per seed" in t for t in legend)


def test_plot_histories_on_given_axes_and_as_history_plot():
    fig, ax = plt.subplots()
    assert plots.plot_histories({"run": history(TEST)}, ax=ax) is fig
    assert len(artists(ax)["curve"]) == 1
    ax = history(TEST, VAL).plot(label="fine-tuned").axes[0]
    np.testing.assert_allclose(xy(artists(ax)["curve"][0])[1], 100 * np.array(TEST))
    assert ax.get_legend().get_texts()[0].get_text().startswith("fine-tuned (")


@pytest.mark.parametrize("histories, kwargs, message", [
    ({}, {}, "non-empty dict"),
    ({"a": []}, {}, r"histories\['a'\] must be a labkit.train.History or a non-empty list"),
    ({"a": [0.5, 0.6]}, {}, r"histories\['a'\] must be"),
    ({"a": [history(TEST), history(TEST[:4])]}, {}, "the seeds ran different epochs"),
    ({"a": history(TEST)}, {"metric": "acc"}, r"metric must be one of \['test_acc', 'val_acc', 'train_acc'\]"),
    ({"a": history(TEST)}, {"band": "iqr"}, r"band must be one of \['range', 'std'\]"),
])
def test_plot_histories_bad_input(histories, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plots.plot_histories(histories, **kwargs)


def test_plot_histories_metric_missing_in_a_run():
    h = history(TEST)
    for r in h.records:
        r["val_acc"] = None                      # a run without a validation split
    with pytest.raises(ValueError, match="has no 'val_acc' in every epoch"):
        plots.plot_histories({"a": h}, metric="val_acc")


# --- plots draw only what ran (issue 15) ----------------------------------------------------------

def drawn_points(line):
    """The (x, y) points a Line2D draws (NaN entries are breaks, not points), and its segments:
    pairs of consecutive points with no NaN between them."""
    x, y = xy(line)
    points = [(a, b) for a, b in zip(x, y) if not (np.isnan(a) or np.isnan(b))]
    segments = [((x[i], y[i]), (x[i + 1], y[i + 1])) for i in range(len(x) - 1)
                if not np.isnan([x[i], y[i], x[i + 1], y[i + 1]]).any()]
    return points, segments


def test_plot_accuracy_vs_bits_draws_no_point_and_no_segment_without_a_run():
    """Lab 3's curves: PTQ at every width, QAT at some; no marker and no line where nothing ran."""
    curves = {"PTQ, asymmetric": {8: 0.91, 6: 0.90, 5: 0.89, 4: 0.80, 3: 0.34, 2: 0.10},
              "QAT, first 5 epochs": {8: 0.90, 4: 0.86, 2: 0.70},
              "QAT, symmetric": {4: 0.85, 2: 0.60},
              "one point": {3: 0.5}}
    ax = plots.plot_accuracy_vs_bits(curves, dense=0.9164).axes[0]
    lines = [ln for ln in ax.lines if not ln.get_label().startswith("float (")]
    assert [ln.get_label() for ln in lines] == list(curves)
    for line, points in zip(lines, curves.values()):
        drawn, segments = drawn_points(line)
        assert sorted(drawn) == sorted((float(b), 100 * a) for b, a in points.items())   # every run, nothing else
        assert all(x1 - x0 == 1 for (x0, _), (x1, _) in segments)                      # neighbours only
        assert len(segments) == sum(b + 1 in points for b in points)                    # ... and all of them
        assert line.get_marker() not in (None, "", "None")                              # every point marked
    (dense,) = [ln for ln in ax.lines if ln.get_label().startswith("float (")]
    np.testing.assert_allclose(xy(dense)[1], [91.64, 91.64])
    assert not ax.collections and not ax.patches                                       # nothing else drawn
    assert ax.get_legend().get_title().get_text() == "lines join measured neighbouring widths only"
    ax = plots.plot_accuracy_vs_bits({"PTQ": {4: 0.8, 3: 0.5}}).axes[0]
    assert ax.get_legend().get_title().get_text() == ""                                # nothing broken
    with pytest.raises(ValueError, match="bit widths must be ints"):
        plots.plot_accuracy_vs_bits({"PTQ": {"4": 0.8}})


def test_plot_histories_names_its_reference_lines():
    """Lab 3 (d) starts from the sparse float model: its reference line says so, beside the dense one."""
    ax = plots.plot_histories({"sparse + 4 bits": history(TEST, VAL)}, dense=0.9164,
                              references={"sparse float model (Lab 2)": 0.824}).axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "dense (91.64%)" in legend and "sparse float model (Lab 2) (82.40%)" in legend
    refs = {ln.get_label(): xy(ln)[1] for ln in ax.lines if ln.get_label().endswith("%)")
            and "epoch" not in ln.get_label()}
    np.testing.assert_allclose(refs["sparse float model (Lab 2) (82.40%)"], [82.4, 82.4])
    ax = plots.plot_histories({"run": history(TEST)}, references={"sparse": 0.8}).axes[0]
    assert not any(t.get_text().startswith("dense") for t in ax.get_legend().get_texts())
    with pytest.raises(ValueError, match="references must be"):
        plots.plot_histories({"run": history(TEST)}, references={"x": 82.4})


def test_plot_histories_of_a_run_without_selection_says_the_last_epoch_is_reported():
    h = history(TEST)
    for r in h.records:
        r["val_acc"] = None                      # no validation images: nothing selected
    ax = plots.plot_histories({"run": h}).axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("reported epoch (no selection: the last epoch)") for t in legend)
    (star,) = artists(ax)["star"]
    assert at(star) == (6, 72.0)
