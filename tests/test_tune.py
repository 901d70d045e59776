"""forgeml.tune: spaces, studies on a journal file, parallel workers, pruning, tracking,
kill-and-resume, best definitions and the CLI, on real Optuna and MLflow stores."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from forgeml import ObjectDef, Repo, TuneError, track, tune
from forgeml.cli import cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tune_digits"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private forgeml home (studies) and tracking store; the example copied in."""
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# A tiny objective whose curve is known: value = x * (step + 1) / steps, so the
# median pruner stops low x early. It logs with track.log_metrics (the pruning hook).
OBJECTIVE = """
import os
import time

from forgeml import track


def train(cfg):
    x = cfg.x
    if cfg.get("boom") and x < 0.2:
        raise RuntimeError("boom at x=%s" % x)
    for step in range(cfg.steps):
        time.sleep(cfg.get("sleep", 0.0))
        track.log_metrics({"score": x * (step + 1) / cfg.steps}, step=step)
    return {"score": x, "pid": os.getpid()}
"""


def _write_study(folder: Path, module: str, **cfg: object) -> tuple[Path, Path]:
    (folder / f"{module}.py").write_text(textwrap.dedent(OBJECTIVE))
    settings = {"entry": f"{module}:train", "seed": 3, "x": 0.5, "steps": 4, **cfg}
    config = folder / "search.yml"
    config.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items()))
    space = folder / "space.yml"
    space.write_text("x: {type: float, low: 0.0, high: 1.0}\n")
    return config, space


# ----------------------------------------------------------------------------- spaces


def test_space_parses_flat_nested_and_list_forms() -> None:
    space = tune.SearchSpace.from_dict(
        {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "model": {"params": {"hidden": {"type": "int", "low": 8, "high": 32, "step": 8}}},
            "act": ["relu", "tanh"],
        }
    )
    assert space.names == ("lr", "model.params.hidden", "act")
    assert space.params[2].choices == ("relu", "tanh")
    grid_space = tune.SearchSpace.from_dict(
        {"h": {"type": "int", "low": 8, "high": 32, "step": 8}, "a": ["x", "y"]}
    )
    assert grid_space.grid() == {"h": [8, 16, 24, 32], "a": ["x", "y"]}
    assert tune.SearchSpace.from_dict(space.to_dict()).to_dict() == space.to_dict()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "flaot", "low": 0, "high": 1}, "Did you mean 'float'?"),
        ({"type": "float", "low": 2, "high": 1}, "low > high"),
        ({"type": "float", "low": 0, "high": 1, "log": True}, "'low' must be positive"),
        ({"type": "int", "low": 0.5, "high": 3}, "needs an integer 'low'"),
        ({"type": "float", "low": 0, "hgh": 1}, "unknown field(s) hgh"),
        ({"type": "categorical", "choices": []}, "non-empty list of choices"),
        ([[32, 32], [64]], "[32, 32] (list)"),
        ({"type": "categorical", "choices": ["a", {"b": 1}]}, "string (e.g. 'wide'"),
        (3, "must be a distribution"),
    ],
)
def test_space_errors_say_what_and_how(spec: object, message: str) -> None:
    with pytest.raises(TuneError, match=None) as err:
        tune.SearchSpace.from_dict({"p": spec})
    assert message in str(err.value)


def test_categorical_choices_may_be_none_bools_numbers_and_strings() -> None:
    space = tune.SearchSpace.from_dict({"p": [None, True, 3, 0.5, "relu"]})
    assert space.params[0].choices == (None, True, 3, 0.5, "relu")


def test_space_checks_keys_against_the_config_and_grid_needs_steps() -> None:
    space = tune.SearchSpace.from_dict({"model.params.hiden": {"type": "int", "low": 1, "high": 4}})
    with pytest.raises(TuneError, match=r"Did you mean 'model.params.hidden'\?"):
        space.check({"model": {"cls": "a:B", "params": {"hidden": 3}}})
    with pytest.raises(TuneError, match="float without 'step'"):
        tune.SearchSpace.from_dict({"lr": {"type": "float", "low": 0, "high": 1}}).grid()
    cfg = space.apply({"model": {"params": {"hiden": 1}}}, {"model.params.hiden": 4})
    assert cfg.model.params.hiden == 4


def test_object_def_from_config_nodes() -> None:
    node = {
        "cls": "forgeml.objects:Object",
        "args": [1],
        "params": {"inner": {"cls": "forgeml:Object"}},
    }
    definition = tune.object_def(node)
    assert definition == ObjectDef("forgeml.objects:Object", 1, inner=ObjectDef("forgeml:Object"))
    with pytest.raises(TuneError, match="unknown key"):
        tune.object_def({"cls": "forgeml:Object", "parms": {}})
    with pytest.raises(TuneError, match="mapping with 'cls'"):
        tune.object_def([1])


def test_report_outside_a_search_only_logs() -> None:
    assert tune.current_trial() is None
    tune.report(0, 0.5)  # no trial, no run: nothing happens
    assert tune.should_prune() is False
    with pytest.raises(TuneError, match="non-negative integer"):
        tune.report(-1, 0.5)


# ----------------------------------------------------------------------------- studies


def test_setup_errors(home: Path) -> None:
    config, space = _write_study(home, "obj_errors")
    with pytest.raises(TuneError, match="SQLite file, which is not safe"):
        tune.optimize(config, space, metric="score", storage=f"sqlite:///{home}/s.db")
    with pytest.raises(TuneError, match="Did you mean 'tpe'"):
        tune.optimize(config, space, metric="score", sampler="tep")
    with pytest.raises(TuneError, match="pip install cmaes"):
        tune.optimize(config, space, metric="score", sampler="cmaes", trials=1, track=False)
    bad = home / "bad.yml"
    bad.write_text("entry: obj_errors:trian\nx: 0.5\nsteps: 2\n")
    with pytest.raises(TuneError, match="Did you mean 'train'"):
        tune.optimize(bad, space, metric="score")
    with pytest.raises(TuneError, match="No study 'nope'"):
        tune.status("nope")


@pytest.mark.slow
def test_search_tracks_prunes_and_resumes_in_process(home: Path) -> None:
    config, space = _write_study(home, "obj_inproc")
    result = tune.optimize(
        config, space, metric="score", trials=10, sampler="random", seed=1, echo=None
    )
    assert result.finished == 10
    assert result.done
    assert result.counts.get("PRUNED", 0) >= 1  # low x is stopped early by the median pruner
    assert result.counts["COMPLETE"] + result.counts["PRUNED"] == 10
    assert default_journal(home, "search").is_file()
    handle = tune.load_study("search")
    best = max((t for t in handle.trials if t.state.name == "COMPLETE"), key=lambda t: t.value or 0)
    assert result.best_value == pytest.approx(best.params["x"])
    # every trial is a run of the study's experiment, under the study's run
    runs = track.list_runs("search", limit=100)
    study_runs = [r for r in runs if r.tags.get("forgeml.role") == "study"]
    trial_runs = [r for r in runs if "forgeml.trial" in r.tags]
    assert len(study_runs) == 1
    assert study_runs[0].run_id == result.run_id
    assert sorted(int(r.tags["forgeml.trial"]) for r in trial_runs) == list(range(10))
    assert {r.tags["mlflow.parentRunId"] for r in trial_runs} == {result.run_id}
    assert study_runs[0].metrics["tune.complete"] == result.counts["COMPLETE"]
    pruned = next(t for t in handle.trials if t.state.name == "PRUNED")
    run = next(r for r in trial_runs if r.run_id == pruned.user_attrs["forgeml.run_id"])
    assert run.tags["forgeml.trial_state"] == "PRUNED"
    points = track.get_metrics(run.run_id)["score"]
    assert len(points) >= len(pruned.intermediate_values)
    # the same command again resumes: 10 done, 4 more to reach 14
    again = tune.optimize(config, space, metric="score", trials=14, sampler="random", echo=None)
    assert again.finished == 14
    assert again.run_id == result.run_id
    with pytest.raises(TuneError, match="exists with a different metric"):
        tune.optimize(config, space, metric="other", trials=14, echo=None)


def test_trials_of_dead_or_silent_workers_are_requeued(home: Path) -> None:
    import optuna

    storage = tune._study.open_storage(home / "s.journal", "s")
    study = optuna.create_study(study_name="s", storage=storage)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    workers = {
        "local-dead": f"{socket.gethostname()}:{dead.stdout.strip()}",
        "local-alive": f"{socket.gethostname()}:{os.getpid()}",
        "remote-silent": "elsewhere:12",
        "remote-beating": "elsewhere:13",
    }
    for i, worker in enumerate(workers.values()):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("forgeml.worker", worker)
        beat = time.time() - (tune._study.STALE_AFTER + 60 if i == 2 else 1)
        trial.set_user_attr("forgeml.heartbeat", beat)
    unsigned = study.ask()  # taken, not yet signed by its worker: too young to be abandoned
    requeued = tune._study.recover_stale(study, storage)
    assert requeued == [0, 2]  # the dead local process, the remote one gone silent
    assert tune._study._abandoned(study.trials[unsigned.number], time.time() + 60)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "RUNNING", "FAIL", "RUNNING", "RUNNING", "WAITING", "WAITING"]
    assert study.trials[5].system_attrs["fixed_params"] == study.trials[0].params  # queued again
    assert study.trials[6].user_attrs["forgeml.retry_of"] == 2


def test_a_trial_finished_after_being_listed_is_left_alone(home: Path) -> None:
    import optuna

    storage = tune._study.open_storage(home / "s.journal", "s")
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr("forgeml.worker", "elsewhere:12")
    trial.set_user_attr("forgeml.heartbeat", time.time() - tune._study.STALE_AFTER - 60)
    listed = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert tune._study._abandoned(listed[0], time.time())  # recovery would take it...
    study.tell(trial, 0.7)  # ...but its worker was alive after all and finished it
    study_id = storage.get_study_id_from_name("s")
    assert not tune._study._abandon(study, storage, study_id, trial.number, listed[0].params)
    (done,) = study.trials  # untouched: still complete, nothing queued again
    assert (done.state.name, done.value, done.user_attrs.get("forgeml.stale")) == (
        "COMPLETE", 0.7, None,
    )  # fmt: skip
    assert tune._study.recover_stale(study, storage) == []


def default_journal(home: Path, study: str) -> Path:
    return home / "home" / "tune" / f"{study}.journal"


def test_failed_trials_are_recorded_and_grid_covers_the_grid(home: Path) -> None:
    config, _ = _write_study(home, "obj_grid", boom=True)
    space = home / "grid.yml"
    space.write_text("x: {type: float, low: 0.0, high: 1.0, step: 0.25}\n")
    lines: list[str] = []
    result = tune.optimize(
        config, space, metric="score", trials=50, sampler="grid", pruner="none",
        track=False, echo=lines.append,
    )  # fmt: skip
    assert result.trials == 5
    assert result.finished == 5
    assert result.counts == {"COMPLETE": 4, "FAIL": 1}
    handle = tune.load_study("search")
    assert sorted(t.params["x"] for t in handle.trials) == [0.0, 0.25, 0.5, 0.75, 1.0]
    failed = next(t for t in handle.trials if t.state.name == "FAIL")
    assert "boom at x=0.0" in failed.user_attrs["forgeml.error"]
    assert any("fail" in line and "RuntimeError: boom" in line for line in lines)
    assert result.best_value == 1.0


@pytest.mark.slow
def test_cli_status_best_plot_and_save(home: Path) -> None:
    shutil.copytree(EXAMPLE, home / "ex")
    runner = CliRunner()
    args = ["tune", "ex/config.yml", "--space", "ex/space.yml", "--metric", "val_acc"]
    out = runner.invoke(cli, [*args, "--trials", "4", "--no-track", "-q", "epochs=3"])
    assert out.exit_code == 0, out.output
    assert "study 'config': 4/4 trials" in out.output
    status = runner.invoke(cli, ["tune", "status", "config", "--json"])
    data = json.loads(status.output)
    assert data["finished"] == 4
    assert len(data["trial_list"]) == 4
    assert runner.invoke(cli, ["tune", "status", "config", "--trials"]).exit_code == 0
    best = runner.invoke(cli, ["tune", "best", "config", "--json", "--retrain"])
    assert best.exit_code == 0, best.output
    info = json.loads(best.output)
    assert info["retrained_value"] == info["value"]  # same config, same seed, same score
    assert info["definition"].startswith("ObjectDef(DigitsMLP, hidden=")
    saved = runner.invoke(cli, ["tune", "best", "config", "--save-to", "models", "--retrain"])
    assert saved.exit_code == 0, saved.output
    (obj,) = Repo("models").get(tags=["config"])
    x_val, y_val = sys.modules["objective"].digits(0)[1::2]
    assert obj.accuracy(x_val, y_val) == pytest.approx(info["value"])
    plot = runner.invoke(cli, ["tune", "plot", "config", "--out", "plots"])
    assert plot.exit_code == 0, plot.output
    for kind in ("history", "importances"):
        png = home / "plots" / f"config-{kind}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
    missing = runner.invoke(cli, ["tune", "status", "confg"])
    assert missing.exit_code == 1
    assert "Did you mean 'config'" in missing.output


def test_callback_outside_a_search_does_nothing() -> None:
    cb = tune.callback()
    cb.on_epoch_end(1, {"val_accuracy": 0.5})  # no trial: nothing to report, nothing raised


@pytest.mark.slow
def test_trainable_search_prunes_through_fit_and_retrains_identically(home: Path) -> None:
    shutil.copytree(EXAMPLE, home / "ex")
    result = tune.optimize(
        home / "ex" / "trainable.yml", home / "ex" / "trainable_space.yml",
        metric="val_accuracy", trials=12, sampler="random", seed=0, echo=None,
    )  # fmt: skip
    assert result.finished == 12
    assert result.counts.get("FAIL", 0) == 0
    handle = tune.load_study("trainable")
    for t in handle.trials:  # a pruned trial's fit stopped before its 4 epochs
        assert (len(t.intermediate_values) < 4) == (t.state.name == "PRUNED")
    assert result.counts.get("PRUNED", 0) >= 1
    again = tune.retrain("trainable")
    assert again["value"] == result.best_value  # same definition, same seed, same score
    dry_id = tune.save_best("trainable", home / "repo", key="trainable", retrain_first=True)
    stored = Repo(home / "repo")[dry_id]  # the trained Trainable, weights included
    val = sys.modules["trainable_objective"].digits()[1]
    assert stored.evaluate(val, ["accuracy"])["accuracy"] == pytest.approx(result.best_value)
    assert (
        stored.definition().category().kwargs["model"]
        == tune.best_definition("trainable", "trainable").kwargs["model"]
    )


# ----------------------------------------------------------------------------- processes


def _forgeml(*args: str) -> list[str]:
    return [sys.executable, "-m", "forgeml", *args]


@pytest.mark.slow
def test_interrupted_and_killed_search_resumes_with_every_trial_accounted(home: Path) -> None:
    config, space = _write_study(home, "obj_kill", sleep=0.15, steps=6)
    command = _forgeml(
        "tune", str(config), "--space", str(space), "--metric", "score",
        "--trials", "16", "--jobs", "2", "--sampler", "random", "--no-track", "-q",
    )  # fmt: skip
    journal = default_journal(home, "search")

    def start_and_wait_for(finished: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # state 1: COMPLETE
            if journal.is_file() and journal.read_text().count('"state":1') >= finished:
                return proc
            time.sleep(0.1)
        proc.kill()
        pytest.fail(f"trials did not finish in time: {proc.communicate()[0]!r}")

    # Ctrl-C: the workers stop, and queue the values of the trials they were running
    proc = start_and_wait_for(2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) != 0
    interrupted = tune.status("search")
    assert interrupted.counts.get("RUNNING", 0) == 0
    assert interrupted.counts.get("WAITING", 0) == interrupted.counts.get("ABANDONED", 0) >= 1

    # SIGKILL: nothing runs any cleanup; the next run finds the orphaned trials
    proc = start_and_wait_for(interrupted.counts["COMPLETE"] + 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.5)  # its workers die with it (PR_SET_PDEATHSIG)
    handle = tune.load_study("search")
    running = [t.number for t in handle.trials if t.state.name == "RUNNING"]
    assert running, "the kill should have caught trials mid-run"
    for t in handle.trials:
        if t.state.name == "RUNNING" and "forgeml.worker" in t.user_attrs:
            _host, _, pid = t.user_attrs["forgeml.worker"].rpartition(":")
            assert not Path(f"/proc/{pid}").exists() or _zombie(int(pid))
    if any("forgeml.worker" not in t.user_attrs for t in handle.trials):
        time.sleep(tune._study.UNSIGNED_AFTER)  # killed between taking a trial and signing it
    abandoned_before = tune.status("search").counts.get("ABANDONED", 0)
    again = subprocess.run(command[:-1], capture_output=True, text=True, timeout=90)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "lost their worker; queued again" in again.stdout
    final = tune.status("search")
    assert final.counts.get("RUNNING", 0) == 0
    assert final.counts.get("WAITING", 0) == 0
    assert final.counts["ABANDONED"] == abandoned_before + len(running)
    assert final.counts["COMPLETE"] + final.counts.get("PRUNED", 0) == 16
    retried = [t for t in tune.load_study("search").trials if "forgeml.retry_of" in t.user_attrs]
    abandoned = [
        t.number for t in tune.load_study("search").trials if t.user_attrs.get("forgeml.stale")
    ]
    assert sorted(t.user_attrs["forgeml.retry_of"] for t in retried) == sorted(abandoned)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.slow
def test_acceptance_50_trial_tpe_median_search_on_digits_in_parallel(home: Path) -> None:
    shutil.copytree(EXAMPLE, home / "ex")
    started = time.monotonic()
    proc = subprocess.run(
        _forgeml(
            "tune", "ex/config.yml", "--space", "ex/space.yml", "--metric", "val_acc",
            "--trials", "50", "--jobs", "2", "--sampler", "tpe", "--pruner", "median",
            "--study", "digits", "--json", "epochs=4",
        ),
        capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["finished"] == 50
    assert result["counts"].get("FAIL", 0) == 0
    assert result["counts"]["PRUNED"] >= 5, result["counts"]  # median pruning did stop trials
    assert result["best_value"] > 0.9
    workers = {t.user_attrs["forgeml.worker"] for t in tune.load_study("digits").trials}
    assert len(workers) == 2  # two worker processes ran trials
    trial_runs = [r for r in track.list_runs("digits", limit=200) if "forgeml.trial" in r.tags]
    assert len(trial_runs) == 50  # every trial is logged
    # the best definition rebuilds and retrains to the same score with the same seed
    sys.path.insert(0, str(home / "ex"))
    try:
        again = tune.retrain("digits")
        assert again["value"] == result["best_value"]
        definition = tune.best_definition("digits")
        assert definition == again["result"]["object"].definition().category()
        dry_id = tune.save_best("digits", home / "repo")  # the definition, built (untrained)
        stored = Repo(home / "repo")[dry_id]
        assert stored.definition().category() == definition
    finally:
        sys.path.remove(str(home / "ex"))
    print(f"50 trials, 2 workers: {seconds:.1f} s; counts {result['counts']}")


# ----------------------------------------------------------------------------- slurm

try:
    from slurm_cluster import slurm_cluster  # a real single-node Slurm cluster (or a skip)
except ImportError:  # pragma: no cover - the fixture module ships with the jobs tests
    slurm_cluster = None

__all__ = ["slurm_cluster"]  # fixture used by name below


@pytest.mark.slow
def test_slurm_array_workers_share_the_journal(
    slurm_cluster: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import forgeml.jobs as jobs

    config, space = _write_study(home, "obj_slurm")
    storage = home / "shared" / "search.journal"
    result = tune.optimize(
        config, space, metric="score", trials=6, jobs=2, sampler="random",
        storage=storage, slurm=True, echo=None,
    )  # fmt: skip
    assert result.job is not None
    assert not result.done
    final = jobs.wait(result.job, timeout=100)
    assert all(task.state == "COMPLETED" for task in final.values()), final
    done = tune.status("search", storage)
    assert done.finished == 6
    assert done.counts.get("FAIL", 0) == 0
    workers = {t.user_attrs["forgeml.worker"] for t in tune.load_study("search", storage).trials}
    assert len(workers) == 2  # both array tasks ran trials
    runs = [r for r in track.list_runs("search", limit=50) if "forgeml.trial" in r.tags]
    assert len(runs) == 6
