"""labkit.course: the course's shared parameters, its editions, derived values and refused editions."""
import pytest

from labkit import course, settings


def test_the_two_editions_differ_in_the_pruning_fractions_and_the_target_only():
    a, b = course.EDITIONS["course"], course.EDITIONS["2024"]
    assert (a.qs, a.target) == ((0.4, 0.6, 0.8), 0.8)          # the assignment's values
    assert (b.qs, b.target) == ((0.3, 0.5, 0.7), 0.7)          # its 2024 edition's
    differ = {f for f in a.__dataclass_fields__ if getattr(a, f) != getattr(b, f)}
    assert differ == {"name", "qs", "target"}


def test_lab4_sparsities_always_contain_the_target():
    assert course.EDITIONS["course"].lab4_sparsities == (0.5, 0.8, 0.9, 0.95)
    assert course.EDITIONS["2024"].lab4_sparsities == (0.5, 0.7, 0.9, 0.95)
    assert course.EDITIONS["course"].replace(target=0.9).lab4_sparsities == (0.5, 0.9, 0.95)


def test_current_follows_labkit_course(monkeypatch):
    monkeypatch.delenv("LABKIT_COURSE", raising=False)
    assert course.current().name == "course"
    monkeypatch.setenv("LABKIT_COURSE", "2024")
    assert course.current() is course.EDITIONS["2024"]
    assert course.current("course").name == "course"           # an argument wins
    monkeypatch.setenv("LABKIT_COURSE", "2025")
    with pytest.raises(ValueError, match=r"no course edition '2025'.*LABKIT_COURSE"):
        course.current()


@pytest.mark.parametrize("changes, match", [
    (dict(qat_bits=(4, 3, 1)), "qat_bits within ptq_bits"),      # a width (c) tunes that (b) never measured
    (dict(sym_qat_bits=(4, 3, 5)), "sym_qat_bits within qat_bits"),
    (dict(bits=5), "bits within qat_bits"),                     # Lab 4 loads Lab 3 (d)'s model at these bits
    (dict(seeds=(0,)), "two or more"),
    (dict(seeds=(1, 1)), "distinct"),
    (dict(qs=(0.8, 0.4)), "increasing"),
    (dict(qs=(40, 60)), "qs"),                                  # a percent for a fraction
    (dict(target=1.0), "target"),
    (dict(epochs=0), "epochs"),
    (dict(ptq_bits=(4, 4)), "distinct"),
    (dict(scan_sparsities=(0.3, 0.5, 0.8)), "reaching beyond the target"),   # Lab 2 (f) could not allocate 0.8
    (dict(scan_sparsities=(0.9, 0.5, 0.95)), "increasing"),
    (dict(mixed_bits=(2, 4)), "budget_bits"),                   # the uniform model must be one allocation
    (dict(mixed_bits=(3,)), "two or more"),
])
def test_an_edition_that_breaks_a_dependency_is_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        course.EDITIONS["course"].replace(**changes)


def test_describe_names_the_values_the_editions_differ_in():
    assert course.EDITIONS["2024"].describe() == \
        "course edition '2024': pruning fractions 0.3, 0.5, 0.7, target sparsity 0.7"


def test_each_edition_runs_in_its_own_folder():
    full, ci = settings.PROFILES["full"], settings.PROFILES["ci"]
    assert course.current("course").folder(full) == "full"
    assert course.current("course").folder(ci) == "ci"
    assert course.current("2024").folder(ci) == "ci-2024"
    with pytest.raises(ValueError, match="settings.Profile"):
        course.current("2024").folder("ci")


# --- issue 27: an edition is validated where it is defined ------------------------------------------

@pytest.mark.parametrize("change, match", [
    (dict(val_fraction=0), r"val_fraction must be in \(0, 1\)"),
    (dict(val_fraction=0.0), r"val_fraction must be in \(0, 1\)"),
    (dict(name="fall/2025"), "no '/'"),
    (dict(name="Fall2025"), "lower-case"),
    (dict(name=""), "lower-case"),
    (dict(ptq_bits=(6, 5, 4, 3, 2, 1), qat_bits=(4, 3, 2, 1), sym_qat_bits=(4, 1)), "sym_qat_bits must be 2 or more"),
])
def test_an_edition_that_a_run_could_not_use_is_refused(change, match):
    """A zero val_fraction (no validation images), a name LABKIT_COURSE cannot select or that makes a
    folder path, a 1-bit symmetric width (its quantizer returns NaN)."""
    with pytest.raises(ValueError, match=match):
        course.EDITIONS["course"].replace(**change)


def test_every_edition_is_selectable_by_labkit_course(monkeypatch):
    for name in course.EDITIONS:
        monkeypatch.setenv("LABKIT_COURSE", f" {name.upper()} ")
        assert course.current() is course.EDITIONS[name]
