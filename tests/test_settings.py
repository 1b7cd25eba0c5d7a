"""settings.Profile.verdict: a quick run's verdicts say they cannot answer the question; the
reference run's are printed as they are."""
import pytest

from labkit import settings


def test_the_full_profile_prints_a_verdict_unchanged():
    assert settings.PROFILES["full"].verdict("a is higher than b") == "a is higher than b"
    assert not settings.PROFILES["full"].quick


def test_a_quick_run_marks_every_verdict_as_one_that_cannot_answer():
    ci = settings.PROFILES["ci"]
    assert ci.quick
    line = ci.verdict("a is higher than b: beyond the noise")
    assert line.startswith("a is higher than b: beyond the noise [quick run (profile ci)")
    assert "cannot answer the question" in line and "full run" in line


@pytest.mark.parametrize("profile", [settings.Profile("x", 1.0, 1024), settings.Profile("y", 0.5, None)])
def test_any_profile_that_trains_less_is_quick(profile):
    assert profile.quick and "[quick run" in profile.verdict(3)


def test_the_verdict_takes_any_object_by_its_str():
    class V:
        def __str__(self):
            return "sentence"
    assert settings.PROFILES["full"].verdict(V()) == "sentence"
