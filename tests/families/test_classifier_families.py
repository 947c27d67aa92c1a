"""Every classifier family trains a few steps to a finite, falling loss through the shared pre-flight."""

import json

import pytest
import torch
from family_data import family_layers, labelled_store, tiny_overrides

from spectral_training import families
from spectral_training.families.checks import validate_family
from spectral_training.families.runs import train_family

CLASSIFIERS = families.family_names("classify")
VALIDATION = {"batch_size": 8, "steps": 5, "lr": 1e-3, "seed": 0}


def _resolved(name, extra=None):
    block, defaults = family_layers(name, tiny_overrides(name))
    if extra:
        block = families.params.deep_merge(block, extra)
    return families.resolve(name, block, *defaults, pipeline="classify")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return labelled_store(tmp_path_factory.mktemp("store"), wavelengths=[450, 500, 550, 600, 650, 700])


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_classifier_family_passes_preflight_with_a_falling_loss(name, data):
    store, index, stats = data
    params = _resolved(name)
    report = validate_family(families.get_family(name), store, index, stats, params, VALIDATION)
    assert report["passed"], report["failed"]
    falling = next(c for c in report["checks"] if c["name"] == "loss_decreases")
    assert all(map(lambda v: v == v and abs(v) < float("inf"), falling["losses"]))
    assert falling["losses"][-1] < falling["losses"][0]


def test_a_resize_the_model_does_not_take_is_caught_naming_both_parameters(data):
    store, index, stats = data
    params = _resolved("vit", {"transforms": {"train": [{"resize": 32}]}})
    report = validate_family(families.get_family("vit"), store, index, stats, params, VALIDATION)
    assert not report["passed"]
    assert any("vit.transforms.train[0].resize=32" in d and "vit.model.image_size" in d for d in report["failed"])


def test_eva02_takes_its_input_size_from_its_own_data_config(data):
    store, index, stats = data
    family = families.get_family("eva02")
    params = _resolved("eva02", {"model": {"name": "eva02_base_patch14_224", "image_size": None, "kwargs": {}},
                                 "transforms": {"train": [{"resize": 448}], "eval": [{"resize": 448}]}})
    assert family.image_size(params, tile_size=16) == 224
    from spectral_training.families.classifier.family import classifier_transforms

    train_t, _, _ = classifier_transforms(params, stats, 224, "eva02")
    from spectral_training.training.preflight import check_shapes

    checks = check_shapes(16, 6, train_t, train_t, 224, 6, image_size_param="eva02.model.image_size")
    assert any(not c["passed"] and "448" in c["detail"] and "eva02.model.image_size is 224" in c["detail"]
               for c in checks)


def test_a_classifier_run_keeps_the_checkpoint_of_the_best_macro_f1_and_evaluates_it(data, tmp_path):
    store, index, stats = data
    family = families.get_family("satellite_cnn")
    params = _resolved("satellite_cnn", {"train": {"epochs": 3}})
    setup = family.prepare(store, index, stats, params)
    run = train_family(family, setup, params, tmp_path / "models")
    history = run.result.history
    assert run.manifest["monitor"] == "val_macro_f1" and run.manifest["mode"] == "max"
    f1 = [h["val_macro_f1"] for h in history]
    assert run.manifest["best_epoch"] == max(range(len(f1)), key=lambda i: (f1[i], -i))
    assert (tmp_path / "models" / "satellite_cnn" / run.run_name / "best.pt").is_file()
    metrics, values, figures = family.evaluate(store, index, stats, run.manifest, params, history)
    assert set(figures) == set(family.plot_names)
    assert metrics["class_names"] == ["c0", "c1", "c2"] and len(metrics["confusion_matrix"]) == 3
    assert {"accuracy", "macro_f1"} <= set(values)
    json.dumps(metrics)  # the report is plain JSON


def test_class_weights_reach_the_loss(data):
    store, index, stats = data
    family = families.get_family("cnn")
    params = _resolved("cnn")
    setup = family.prepare(store, index, stats, params)
    objective = family.make_forward(setup)
    assert setup.extra["class_weights"] is not None and len(setup.extra["class_weights"]) == 3
    unweighted = family.make_forward(family.prepare(store, index, stats, _resolved("cnn", {"labels": {"class_weights": False}})))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3)).eval()
    batch = {"cube": torch.randn(4, 6, 16, 16), "label": torch.tensor([0, 0, 0, 1])}
    torch.manual_seed(0)
    weighted_loss = objective(model, batch)["loss"]
    assert torch.isfinite(weighted_loss)
    if len(set(setup.extra["class_weights"])) > 1:
        assert not torch.isclose(weighted_loss, unweighted(model, batch)["loss"])


def test_positive_class_trains_a_binary_classifier(data):
    store, index, stats = data
    family = families.get_family("flood_cnn")
    params = _resolved("flood_cnn", {"labels": {"positive_class": "c1"}})
    setup = family.prepare(store, index, stats, params)
    assert setup.model_kwargs["num_classes"] == 2 and setup.metadata["class_names"] == ["not c1", "c1"]
