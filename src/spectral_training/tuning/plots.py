"""Optuna's matplotlib plots of a study; a figure that says why when a plot cannot be drawn yet."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import optuna
from matplotlib.figure import Figure
from optuna.trial import TrialState

log = logging.getLogger(__name__)

PLOT_NAMES = ("optimization_history", "param_importances", "parallel_coordinates")


def message_figure(title: str, message: str) -> Figure:
    """A figure that carries only a message (no pyplot state)."""
    fig = Figure(figsize=(7, 3))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11)
    return fig


def _optuna_figure(title: str, draw: Callable[[], object]) -> Figure:
    """The figure of an Optuna matplotlib plot, detached from pyplot; a message figure if it fails."""
    import matplotlib.pyplot as plt  # Optuna's matplotlib backend draws through pyplot

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning of the matplotlib backend, "too few trials"
            ax = draw()
    except (ValueError, RuntimeError, ImportError, ZeroDivisionError) as error:
        log.warning("%s: cannot be drawn: %s", title, error)
        return message_figure(title, f"cannot be drawn: {error}")
    fig = ax[0].figure if hasattr(ax, "__len__") else ax.figure
    plt.close(fig)
    return fig


def study_plots(study: optuna.Study) -> dict[str, Figure]:
    """Optimisation history, parameter importances and parallel coordinates, by name (PLOT_NAMES)."""
    from optuna.visualization import matplotlib as vis

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varied = {name for t in complete for name in t.params if len({str(u.params.get(name)) for u in complete}) > 1}
    figures = {}
    if not complete:
        figures["optimization_history"] = message_figure(
            "Optimization history", "no trial has completed yet: nothing to plot")
        figures["parallel_coordinates"] = message_figure(
            "Parallel coordinates", "no trial has completed yet: nothing to plot")
    else:
        figures["optimization_history"] = _optuna_figure("Optimization history",
                                                         lambda: vis.plot_optimization_history(study))
        figures["parallel_coordinates"] = _optuna_figure("Parallel coordinates",
                                                         lambda: vis.plot_parallel_coordinate(study))
    if len(complete) < 2 or not varied:
        figures["param_importances"] = message_figure(
            "Hyperparameter importances",
            f"importances need at least 2 completed trials whose parameters differ; the study has {len(complete)} "
            f"completed trial(s). Run more trials (tune.n_trials) and the plot appears.")
    else:
        figures["param_importances"] = _optuna_figure("Hyperparameter importances",
                                                      lambda: vis.plot_param_importances(study))
    return {name: figures[name] for name in PLOT_NAMES}
