"""End to end: `kedro run --pipeline classify` for two families on one dataset, `finetune` on an MAE
checkpoint, `kedro params` of a family, and the errors a misspelt parameter gives."""

import json

import pytest
from corpus import write_class_folders

pytestmark = pytest.mark.e2e

DATA = "dataset=tiny,ingestion.tile_size=16,ingestion.stride=16,ingestion.show_progress=false,"\
       "normalisation_stats.show_progress=false,validation.steps=3"


def _tiny(family: str) -> str:
    common = (f"{family}.train.epochs=2,{family}.train.warmup_epochs=0,{family}.train.progress=false,"
              f"{family}.loader.batch_size=8,{family}.evaluation.show_progress=false")
    models = {
        "satellite_cnn": "",
        "vit": "vit.model.name=vit_tiny_patch16_224,vit.model.image_size=16,vit.model.kwargs.patch_size=4,"
               "vit.model.kwargs.embed_dim=32,vit.model.kwargs.depth=2,vit.model.kwargs.num_heads=2",
        "finetune": "",
    }
    return ",".join(part for part in (DATA, f"family={family}" if family != "finetune" else "", common,
                                      models[family]) if part)


def test_two_classifier_families_train_evaluate_and_keep_their_own_artifacts(kedro_project):
    write_class_folders(kedro_project.raw("tiny"))
    for family in ("satellite_cnn", "vit"):
        run = kedro_project.kedro("run", "--pipeline", "classify", "--params", _tiny(family))
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for family in ("satellite_cnn", "vit"):
        manifest = json.loads(kedro_project.artifact(f"data/06_models/tiny/{family}_model.json").read_text())
        assert manifest["family"] == family and manifest["monitor"] == "val_macro_f1"
        assert kedro_project.path(manifest["best_checkpoint"]).is_file()
        reports = f"data/08_reporting/tiny/{family}"
        metrics = json.loads(kedro_project.artifact(reports, "classification_metrics.json").read_text())
        assert metrics["class_names"] == ["field", "forest", "water"] and 0.0 <= metrics["accuracy"] <= 1.0
        assert metrics["explain_method"] == ("attention_rollout" if family == "vit" else "grad_cam")
        for plot in ("confusion_matrix", "attention_maps", "loss_curves", "metric_curves"):
            assert kedro_project.artifact(reports, f"{plot}.png").stat().st_size > 5000
    _check_mlflow(kedro_project)


def _check_mlflow(kedro_project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{kedro_project.path('mlflow.db')}")
    [experiment] = [e for e in client.search_experiments() if e.name == "spectral_training"]
    runs = {r.data.tags.get("family"): r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"satellite_cnn", "vit"}
    vit = runs["vit"]
    assert vit.info.status == "FINISHED" and vit.data.params["classifier.train.layer_decay"] == "0.65"
    assert {"eval.accuracy", "eval.macro_f1"} <= set(vit.data.metrics)
    assert len(client.get_metric_history(vit.info.run_id, "epoch/val_macro_f1")) == 2
    artifacts = {a.path for folder in ("plots", "reports", "model")
                 for a in client.list_artifacts(vit.info.run_id, folder)}
    assert {"plots/confusion_matrix.png", "plots/attention_maps.png", "reports/classification_metrics.json",
            "model/best.pt"} <= artifacts


def test_finetune_trains_a_classifier_on_the_mae_checkpoint_of_the_dataset(kedro_project):
    write_class_folders(kedro_project.raw("tiny"))
    mae = ("mae.model.image_size=16,mae.model.spatial_patch=4,mae.model.spectral_patch=3,mae.model.depth=2,"
           "mae.model.embed_dim=32,mae.model.num_heads=2,mae.model.decoder_embed_dim=32,mae.model.decoder_depth=1,"
           "mae.model.decoder_num_heads=2,mae.train.epochs=1,mae.train.warmup_epochs=0,mae.train.progress=false,"
           "mae.loader.batch_size=8,mae.evaluation.show_progress=false")
    pretrain = kedro_project.kedro("run", "--pipeline", "mae_pretrain", "--params", f"{DATA},{mae}")
    assert pretrain.returncode == 0, pretrain.stdout[-3000:] + pretrain.stderr[-3000:]
    run = kedro_project.kedro("run", "--pipeline", "finetune", "--params", _tiny("finetune"))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    manifest = json.loads(kedro_project.artifact("data/06_models/tiny/finetune_model.json").read_text())
    mae_manifest = json.loads(kedro_project.artifact("data/06_models/tiny/mae_model.json").read_text())
    assert manifest["model_kwargs"]["checkpoint"] == mae_manifest["best_checkpoint"]
    assert manifest["band_names"] == [f"band_{i:03d}" for i in range(6)]
    assert kedro_project.artifact("data/08_reporting/tiny/finetune/confusion_matrix.png").is_file()


def test_kedro_params_prints_the_resolved_family_block(kedro_project):
    shown = kedro_project.kedro("params", "--pipeline", "classify", "--params", "family=vit,vit.train.lr=3e-4")
    assert shown.returncode == 0, shown.stderr[-3000:]
    resolved = shown.stdout.split("resolved_family:", 1)[1]
    assert "family: vit" in resolved and "lr: 0.0003" in resolved and "layer_decay: 0.65" in resolved


def test_a_misspelt_family_key_stops_the_run_naming_the_key_and_the_valid_ones(kedro_project):
    write_class_folders(kedro_project.raw("tiny"))
    run = kedro_project.kedro("run", "--pipeline", "classify", "--params", f"{DATA},family=vit,vit.train.lrr=1e-3")
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "'lrr'" in output and "did you mean 'lr'" in output
    old = kedro_project.kedro("run", "--pipeline", "mae_pretrain", "--params", "dataset=tiny,model.variant=small")
    assert old.returncode != 0 and "write mae.model" in old.stdout + old.stderr
