"""The `tune` settings: every key checked, the sampler seeded, the pruner chosen by name."""

import optuna
import pytest

from spectral_training.tuning import TuneError, TuneSettings


def test_a_misspelt_setting_is_an_error_naming_it_and_the_close_key():
    with pytest.raises(TuneError, match=r"tune.sampler: unknown key\(s\) 'seeed' \(did you mean 'seed'\?\)"):
        TuneSettings.from_dict({"sampler": {"seeed": 1}})


def test_an_unknown_pruner_lists_the_choices():
    with pytest.raises(TuneError, match="tune.pruner.name: expected one of median, hyperband, none"):
        TuneSettings.from_dict({"pruner": {"name": "asha"}})


def test_the_default_sampler_is_a_seeded_tpe_that_moves_on_with_the_trials_so_far():
    settings = TuneSettings.from_dict({})
    first, later = settings.sampler.build(0), settings.sampler.build(3)
    assert isinstance(first, optuna.samplers.TPESampler)
    draw = lambda sampler: optuna.create_study(sampler=sampler).ask().suggest_float("x", 0, 1)  # noqa: E731
    assert draw(settings.sampler.build(0)) == draw(first)  # seeded: the same draw again
    assert draw(later) != draw(settings.sampler.build(0))  # a resumed study does not redraw the first points


@pytest.mark.parametrize("name, kind", [("median", optuna.pruners.MedianPruner),
                                        ("hyperband", optuna.pruners.HyperbandPruner),
                                        ("none", optuna.pruners.NopPruner)])
def test_the_pruner_is_the_one_named(name, kind):
    assert isinstance(TuneSettings.from_dict({"pruner": {"name": name}}).pruner.build(epochs=5), kind)


def test_a_bare_path_is_a_sqlite_file_and_a_url_stays_as_given():
    assert TuneSettings.from_dict({"storage": "data/optuna.db"}).storage_url() == "sqlite:///data/optuna.db"
    url = "postgresql://user:secret@db:5432/optuna"
    assert TuneSettings.from_dict({"storage": url}).storage_url() == url
