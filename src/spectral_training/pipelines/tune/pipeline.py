"""tune: plan -> pre-flight of the space's first point -> study -> report (namespace ``tune``)."""

from kedro.pipeline import Pipeline, node

from .nodes import plan_study, report_study, run_study, validate_search_space

DATA = ["cube_store", "sample_index", "band_stats"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(plan_study,
             inputs=["params:family", "params:classifier", "params:training_defaults", "params:classifier_defaults",
                     "params:tune_search_space", "params:tune", "params:dataset"],
             outputs="tune_plan", name="plan_study"),
        node(validate_search_space, inputs=[*DATA, "tune_plan", "params:validation"],
             outputs="tune_transform_report", name="validate_search_space"),
        node(run_study,
             inputs=[*DATA, "tune_transform_report", "tune_plan", "params:models_root", "params:skip_validation"],
             outputs="tune_trials", name="run_study"),
        node(report_study, inputs=["tune_plan", "tune_trials"],
             outputs=["tune_report", "tune_best_params", "tune_metric_values", "tune_history_plot",
                      "tune_importance_plot", "tune_parallel_plot"],
             name="report_study"),
    ])
