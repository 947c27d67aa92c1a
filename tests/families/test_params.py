"""Family parameters: one block per family over shared defaults, and no key silently ignored."""

import pytest
from family_data import family_layers

from spectral_training import families
from spectral_training.families.params import FamilyParamsError, deep_merge
from spectral_training.hooks import check_runtime_parameters
from spectral_training.training.config import ConfigError


def test_a_family_block_is_merged_over_the_shared_defaults():
    block, defaults = family_layers("vit", {"train": {"lr": 3e-4}})
    resolved = families.resolve("vit", block, *defaults, pipeline="classify")
    assert resolved["family"] == "vit"
    assert resolved["train"]["lr"] == 3e-4  # the override
    assert resolved["train"]["layer_decay"] == 0.65  # the family's recipe
    assert resolved["train"]["seed"] == 42 and resolved["train"]["max_bad_steps"] == 5  # training_defaults
    assert resolved["train"]["amp"] == "off"  # classifier_defaults over training_defaults
    assert resolved["train"]["monitor"] == "val_macro_f1" and resolved["train"]["mode"] == "max"  # classifier_defaults
    assert resolved["mixup"]["mixup_alpha"] == 0.8 and resolved["loss"]["label_smoothing"] == 0.1


def test_lists_are_replaced_not_merged():
    assert deep_merge({"t": {"train": [1, 2]}}, {"t": {"train": [3]}}) == {"t": {"train": [3]}}


@pytest.mark.parametrize("where, override, named", [
    ("train", {"train": {"lrr": 1e-3}}, ["'lrr'", "did you mean 'lr'"]),
    ("model", {"model": {"nmae": "resnet18"}}, ["vit.model", "'nmae'", "did you mean 'name'"]),
    ("block", {"trian": {"lr": 1e-3}}, ["'trian'", "did you mean 'train'", "valid keys"]),
    ("loader", {"loader": {"batchsize": 8}}, ["vit.loader", "'batchsize'", "batch_size"]),
    ("evaluation", {"evaluation": {"splits": "val"}}, ["vit.evaluation", "'splits'", "split"]),
])
def test_a_misspelt_key_is_an_error_naming_it_and_the_valid_ones(where, override, named):
    block, defaults = family_layers("vit", override)
    with pytest.raises(ConfigError) as error:  # FamilyParamsError is a ConfigError
        families.resolve("vit", block, *defaults, pipeline="classify")
    for text in named:
        assert text in str(error.value)


def test_an_unknown_family_suggests_the_closest_name():
    with pytest.raises(FamilyParamsError, match="did you mean 'vit'"):
        families.get_family("vti", pipeline="classify")


def test_a_family_of_another_pipeline_says_which_pipeline_trains_it():
    with pytest.raises(FamilyParamsError, match="trained by the pipeline 'mae_pretrain'"):
        families.get_family("mae", pipeline="classify")


def test_every_registered_family_has_a_parameter_file_that_resolves():
    for name in families.family_names():
        block, defaults = family_layers(name)
        if name == "finetune":
            block["model"]["checkpoint"] = "some/mae_model.json"  # an interpolation in the file
        resolved = families.resolve(name, block, *defaults)
        assert set(families.get_family(name).extra_blocks) <= set(resolved)


def test_old_top_level_blocks_on_the_command_line_are_refused_with_the_new_spelling():
    with pytest.raises(FamilyParamsError, match=r"'model' \(a family's block: write mae.model"):
        check_runtime_parameters({"model": {"variant": "small"}}, {"mae", "dataset", "ingestion"})
    with pytest.raises(FamilyParamsError, match="did you mean 'ingestion'"):
        check_runtime_parameters({"ingestoin": {"tile_size": 8}}, {"mae", "dataset", "ingestion"})
    check_runtime_parameters({"mae": {"train": {"epochs": 1}}, "dataset": "x"}, {"mae", "dataset"})


def test_each_pipeline_stage_merges_the_defaults_its_families_expect():
    from spectral_training.pipelines.family_stage import STAGES

    for stage in STAGES:
        for name in families.family_names(stage.pipeline):
            assert families.family_defaults(name) == stage.defaults, (stage.pipeline, name)
