"""One template for every family's stage: resolve parameters -> validate -> train -> evaluate.

``mae_pretrain``, ``classify`` and ``finetune`` are this template with other names: the family
(fixed, or chosen at run time with ``--params family=<name>``), the parameter block it reads,
and the names of its catalog entries. In `kedro viz` the validation node sits in the
``transform_validation`` namespace and the training and evaluation nodes in the stage's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from kedro.pipeline import Pipeline, node

from .nodes import evaluate_model, resolve_family_params, train_model, validate_transforms


@dataclass(frozen=True)
class Stage:
    """The names that make one family stage out of the template."""

    pipeline: str  # the registered pipeline, also what `families.get_family(..., pipeline=)` checks
    namespace: str  # the kedro-viz box of the training and evaluation nodes
    block: str  # `params:<block>`: the family's parameter block
    family: str | None  # a fixed family; None = the runtime parameter `family`
    model: str  # catalog entries ...
    history: str
    transform_report: str
    metrics: str
    metric_values: str
    plots: tuple[str, ...]  # plot catalog entries, in the family's plot_names order
    train_node: str
    evaluate_node: str
    validate_node: str = "validate_transforms"
    family_params: str = ""  # the in-memory resolved parameters (default: <namespace>_family_params)
    # parameter blocks the family block is merged over, most general first
    defaults: tuple[str, ...] = ("training_defaults",)


def _resolver(stage: Stage):
    """The resolve node's function and inputs: the family is fixed, or the runtime `family` parameter."""
    defaults = [f"params:{name}" for name in stage.defaults]
    if stage.family is not None:
        def resolve_fixed_family(family_block: dict | None, *defaults: dict) -> dict:
            return resolve_family_params(stage.family, family_block, *defaults, pipeline=stage.pipeline)

        resolve_fixed_family.__doc__ = resolve_family_params.__doc__
        return resolve_fixed_family, [f"params:{stage.block}", *defaults]

    def resolve_chosen_family(family: str, family_block: dict | None, *defaults: dict) -> dict:
        return resolve_family_params(family, family_block, *defaults, pipeline=stage.pipeline)

    resolve_chosen_family.__doc__ = resolve_family_params.__doc__
    return resolve_chosen_family, ["params:family", f"params:{stage.block}", *defaults]


def create_pipeline(stage: Stage) -> Pipeline:
    resolved = stage.family_params or f"{stage.namespace}_family_params"
    resolve, resolve_inputs = _resolver(stage)
    data = ["cube_store", "sample_index", "band_stats"]
    validation = Pipeline([
        node(resolve, inputs=resolve_inputs, outputs=resolved, name=f"resolve_{stage.namespace}_params"),
        node(validate_transforms, inputs=[*data, resolved, "params:validation"], outputs=stage.transform_report,
             name=stage.validate_node),
    ])
    training = Pipeline([
        node(train_model,
             inputs=[*data, stage.transform_report, resolved, "params:models_root", "params:dataset",
                     "params:skip_validation"],
             outputs=[stage.model, stage.history], name=stage.train_node),
        node(evaluate_model, inputs=[*data, stage.model, stage.history, resolved],
             outputs=[stage.metrics, stage.metric_values, *stage.plots], name=stage.evaluate_node),
    ])
    return (Pipeline(validation, namespace="transform_validation", prefix_datasets_with_namespace=False)
            + Pipeline(training, namespace=stage.namespace, prefix_datasets_with_namespace=False))


MAE = Stage(
    pipeline="mae_pretrain", namespace="mae", block="mae", family="mae",
    model="mae_model", history="mae_history", transform_report="transform_report",
    metrics="reconstruction_metrics", metric_values="reconstruction_metric_values",
    plots=("reconstruction_grid_plot", "error_per_band_plot", "spectra_plot", "loss_curves_plot"),
    train_node="train_mae", evaluate_node="evaluate_reconstruction",
)

CLASSIFY = Stage(
    pipeline="classify", namespace="classify", block="classifier", family=None,
    model="classifier_model", history="classifier_history", transform_report="classifier_transform_report",
    metrics="classification_metrics", metric_values="classification_metric_values",
    plots=("confusion_matrix_plot", "attention_maps_plot", "classifier_loss_curves_plot", "metric_curves_plot"),
    train_node="train_classifier", evaluate_node="evaluate_classifier",
    validate_node="validate_classifier_transforms", defaults=("training_defaults", "classifier_defaults"),
)

FINETUNE = Stage(
    pipeline="finetune", namespace="finetune", block="finetune", family="finetune",
    model="finetune_model", history="finetune_history", transform_report="finetune_transform_report",
    metrics="finetune_metrics", metric_values="finetune_metric_values",
    plots=("finetune_confusion_matrix_plot", "finetune_attention_maps_plot", "finetune_loss_curves_plot",
           "finetune_metric_curves_plot"),
    train_node="train_finetune", evaluate_node="evaluate_finetune",
    validate_node="validate_finetune_transforms", defaults=("training_defaults", "classifier_defaults"),
)

UNET_MIM = Stage(
    pipeline="unet_mim", namespace="unet_mim", block="unet_mim", family="unet_mim",
    model="unet_mim_model", history="unet_mim_history", transform_report="unet_mim_transform_report",
    metrics="unet_mim_metrics", metric_values="unet_mim_metric_values",
    plots=("unet_mim_reconstruction_grid_plot", "unet_mim_error_per_band_plot", "unet_mim_spectra_plot",
           "unet_mim_loss_curves_plot"),
    train_node="train_unet_mim", evaluate_node="evaluate_unet_mim", validate_node="validate_unet_mim_transforms",
)

UNET_SEG = Stage(
    pipeline="unet_seg", namespace="unet_seg", block="unet_seg", family="unet_seg",
    model="unet_seg_model", history="unet_seg_history", transform_report="unet_seg_transform_report",
    metrics="unet_seg_metrics", metric_values="unet_seg_metric_values",
    plots=("unet_seg_masks_plot", "unet_seg_loss_curves_plot", "unet_seg_metric_curves_plot"),
    train_node="train_unet_seg", evaluate_node="evaluate_unet_seg", validate_node="validate_unet_seg_transforms",
)

UNET_TEMPORAL = Stage(
    pipeline="unet_temporal", namespace="unet_temporal", block="unet_temporal", family="unet_temporal",
    model="unet_temporal_model", history="unet_temporal_history", transform_report="unet_temporal_transform_report",
    metrics="unet_temporal_metrics", metric_values="unet_temporal_metric_values",
    plots=("unet_temporal_prediction_plot", "unet_temporal_error_per_band_plot", "unet_temporal_loss_curves_plot"),
    train_node="train_unet_temporal", evaluate_node="evaluate_unet_temporal",
    validate_node="validate_unet_temporal_transforms",
)

SITS = Stage(
    pipeline="sits", namespace="sits", block="sits_former", family="sits_former",
    model="sits_model", history="sits_history", transform_report="sits_transform_report",
    metrics="sits_metrics", metric_values="sits_metric_values",
    plots=("sits_confusion_matrix_plot", "sits_class_curves_plot", "sits_date_attention_plot",
           "sits_loss_curves_plot", "sits_metric_curves_plot"),
    train_node="train_sits_former", evaluate_node="evaluate_sits_former", validate_node="validate_sits_transforms",
)

SITS_PRETRAIN = Stage(
    pipeline="sits_pretrain", namespace="sits_pretrain", block="sits_pretrain", family="sits_pretrain",
    model="sits_pretrain_model", history="sits_pretrain_history", transform_report="sits_pretrain_transform_report",
    metrics="sits_pretrain_metrics", metric_values="sits_pretrain_metric_values",
    plots=("sits_pretrain_error_per_band_plot", "sits_pretrain_loss_curves_plot"),
    train_node="train_sits_pretrain", evaluate_node="evaluate_sits_pretrain",
    validate_node="validate_sits_pretrain_transforms",
)

STAGES = (MAE, CLASSIFY, FINETUNE, UNET_MIM, UNET_SEG, UNET_TEMPORAL, SITS, SITS_PRETRAIN)


def stage_of(pipeline: Pipeline) -> Stage | None:
    """The family stage a pipeline contains (by its training node), None if it trains nothing."""
    names = {n.name for n in pipeline.nodes}
    return next((stage for stage in STAGES if f"{stage.namespace}.{stage.train_node}" in names), None)


def trained_family(pipeline: Pipeline, params: dict) -> str | None:
    """The family a pipeline trains (its stage's, or the ``family`` parameter), None if it trains none."""
    stage = stage_of(pipeline)
    return None if stage is None else stage.family or params.get("family")
