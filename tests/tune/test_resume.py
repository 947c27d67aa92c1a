"""Studies live in the Optuna storage: a killed study resumes with the same call up to n_trials, a
changed study is refused, and studies of other families or datasets do not mix."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from family_data import labelled_store
from optuna.trial import TrialState
from tune_data import tiny_plan

from spectral_training import tuning
from spectral_training.training import TrainingCallback

WORKER = Path(__file__).with_name("study_worker.py")
LONG = {"n_trials": 2, "epochs": 30}  # a trial lasts about a second: it is killed in its first epochs


def _running_with_an_epoch(url: str) -> bool:
    try:
        study = optuna.load_study(study_name="satellite_cnn-tiny", storage=url)
    except KeyError:  # not created yet
        return False
    return any(t.state == TrialState.RUNNING and t.intermediate_values for t in study.get_trials())


def _kill_mid_trial(folder: Path) -> None:
    """Start the study in a subprocess and SIGKILL it once its first trial has reported an epoch."""
    worker = subprocess.Popen([sys.executable, str(WORKER), str(folder), json.dumps(LONG)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url, deadline = f"sqlite:///{folder / 'optuna.db'}", time.monotonic() + 300
    try:
        while not _running_with_an_epoch(url):
            assert worker.poll() is None, f"the worker ended early: {worker.stderr.read().decode()[-3000:]}"
            assert time.monotonic() < deadline, "no trial reported an epoch within 300 s"
            time.sleep(0.05)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()  # reaped: its process id is gone


def test_a_killed_study_resumes_to_the_requested_number_of_trials(tmp_path):
    store, index, stats = labelled_store(tmp_path)
    index.to_parquet(tmp_path / "sample_index.parquet")
    (tmp_path / "band_stats.json").write_text(json.dumps(stats))
    _kill_mid_trial(tmp_path)
    left = optuna.load_study(study_name="satellite_cnn-tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    [number] = [t.number for t in left.get_trials() if t.state == TrialState.RUNNING]

    outcome = tuning.run_study(tiny_plan(tmp_path, **LONG), store, index, stats, tmp_path / "models")
    trials = outcome.study.get_trials()
    killed, [retry] = trials[number], [t for t in trials if t.user_attrs.get("retry_of") == number]
    assert killed.state == TrialState.FAIL and "ended while it ran" in killed.user_attrs["interrupted"]
    assert tuning.count_finished(outcome.study) == 2 and len(trials) == 3
    assert retry.params == killed.params
    # the retry continued the killed trial's training run from its last checkpoint
    assert retry.user_attrs["run_name"] == killed.user_attrs["run_name"]
    assert min(retry.intermediate_values) >= 1 and retry.state in (TrialState.COMPLETE, TrialState.PRUNED)


def test_a_changed_study_is_refused_naming_what_changed_and_how_to_start_another(tmp_path):
    tuning.open_study(tiny_plan(tmp_path, epochs=2))
    with pytest.raises(tuning.TuneError) as error:
        tuning.open_study(tiny_plan(tmp_path, epochs=3))
    assert "params.train.epochs: 2 -> 3" in str(error.value) and "tune.study_name" in str(error.value)


def test_studies_of_other_families_or_datasets_live_side_by_side_in_one_storage(tmp_path):
    tuning.open_study(tiny_plan(tmp_path))
    tuning.open_study(tiny_plan(tmp_path, family="flood_cnn", space={"space": {
        "lr": {"path": "train.lr", "type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}))
    assert sorted(optuna.get_all_study_names(f"sqlite:///{tmp_path / 'optuna.db'}")) == [
        "flood_cnn-tiny", "satellite_cnn-tiny"]


class _SigtermAtFirstEpoch(TrainingCallback):
    def on_epoch_end(self, epoch, metrics):
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill <pid of kedro run>` would, mid-trial


class _Run:
    run_id = None

    def callbacks(self, run_name):
        return [_SigtermAtFirstEpoch()]

    def finish(self, state, value, reason):
        self.state = state


class _SignalTracker:
    def __init__(self):
        self.runs = []

    @contextlib.contextmanager
    def trial(self, number, params, tags):
        self.runs.append(_Run())
        yield self.runs[-1]


def test_a_signal_stops_the_study_with_its_exit_code_and_queues_the_trial_again(tmp_path):
    tracker = _SignalTracker()
    outcome = tuning.run_study(tiny_plan(tmp_path, epochs=3), *labelled_store(tmp_path), tmp_path / "models",
                               tracker=tracker)
    assert outcome.interrupted_exit_code == 128 + signal.SIGTERM
    stopped, queued = outcome.study.get_trials()
    assert stopped.state == TrialState.FAIL and "stopped by signal" in stopped.user_attrs["interrupted"]
    assert queued.state == TrialState.WAITING and queued.user_attrs["retry_of"] == 0
    assert tuning.count_finished(outcome.study) == 0 and [run.state for run in tracker.runs] == ["interrupted"]
