"""``forgeml.track`` against real MLflow stores: the embedded SQLite store and a real server.

Embedded-store tests share one ``FORGEML_HOME`` per module (a new SQLite store
costs seconds of schema migrations) and use one experiment each. Server tests use
the session's ``mlflow server`` (``mlflow_server`` fixture). Offline behaviour is
tested against a closed port (unreachable from the start) and a TCP proxy that
is closed mid-run (a server that goes away).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mlflow_server import MlflowServer, TcpProxy, free_port

pytest.importorskip("mlflow", reason="forgeml.track needs mlflow (pip install 'forgeml[tracking]')")

from mlflow.tracking import MlflowClient

from forgeml import app, track
from forgeml.cli import cli
from forgeml.config import Config
from forgeml.track import TrackError, _offline, _run, _store
from forgeml.track._values import config_params, param_value
from repo_objects import Point

_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "RANK",
    "SLURM_PROCID",
    "WORLD_SIZE",
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("track-home")


@pytest.fixture(autouse=True)
def home(shared_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """FORGEML_HOME for the test (shared by the module), a clean env, no run left active."""
    monkeypatch.setenv("FORGEML_HOME", str(shared_home))
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a dead server fails at once
    monkeypatch.setattr(_run, "_warned", set())
    try:
        yield shared_home
    finally:
        leftover = track.active_run()
        if leftover is not None:
            leftover.end("KILLED")


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """An experiment name unique to the test."""
    return f"{request.node.name}-{time.time_ns()}"


def client(uri: str | None = None) -> MlflowClient:
    return MlflowClient(tracking_uri=uri or _store.embedded_uri())


def artifacts(c: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in c.list_artifacts(run_id, path):
        found |= artifacts(c, run_id, item.path) if item.is_dir else {item.path}
    return found


def read_artifact(c: MlflowClient, run_id: str, path: str, tmp: Path) -> str:
    return Path(c.download_artifacts(run_id, path, str(tmp))).read_text()


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), prog_name="forgeml")
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=30
    )
    return done.stdout.strip()


def import_file(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"tracked_{time.time_ns()}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- settings


def test_tracking_uri_resolution(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert track.tracking_uri() == f"sqlite:///{home}/mlruns.db" == track.embedded_uri()
    assert track.tracking_uri(cfg={"tracking": {"uri": "http://h:1"}}) == "http://h:1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:2")
    assert track.tracking_uri() == "http://env:2"
    assert track.tracking_uri("http://arg:3", cfg={"tracking": {"uri": "http://h:1"}}) == (
        "http://arg:3"
    )
    monkeypatch.chdir(home)
    assert track.tracking_uri("sqlite:///rel/m.db") == f"sqlite:///{home}/rel/m.db"


def test_tracking_options_are_checked() -> None:
    assert track.tracking_options({}) is None
    assert track.tracking_options({"tracking": False}) is None
    assert track.tracking_options({"tracking": True}) == track.TrackingOptions()
    assert track.tracking_options({"tracking": "http://x:1"}).uri == "http://x:1"  # type: ignore[union-attr]
    assert not track.tracking_enabled({"tracking": {"enabled": False}})
    with pytest.raises(TrackError, match=r"Unknown tracking option 'experimnt'.*'experiment'"):
        track.tracking_options({"tracking": {"experimnt": "x"}})
    with pytest.raises(TrackError, match="flush_interval must be positive"):
        track.tracking_options({"tracking": {"flush_interval": 0}})
    with pytest.raises(TrackError, match="must be true, false, a URI or a mapping"):
        track.tracking_options({"tracking": 3})


def test_config_becomes_params() -> None:
    cfg = Config(
        {
            "model": {"depth": 3, "act": "relu", "extra": {}},
            "gpu": [0, 1],
            "logfile": "/tmp/x-123.log",  # launcher-only: differs between attempts
            "tracking": {"run_id": "abc", "experiment": "e"},
            "bad key!": 1,
            "obj": object(),
            "long": "x" * 600,
        }
    )
    params = config_params(cfg)
    assert params["model.depth"] == "3"
    assert params["model.act"] == "relu"
    assert params["model.extra"] == "{}"
    assert params["gpu"] == "[0, 1]"
    assert params["tracking.experiment"] == "e"
    assert "logfile" not in params
    assert "tracking.run_id" not in params
    assert params["bad key_"] == "1"
    assert params["obj"] == "<object>"  # no memory address: stable across attempts
    assert len(params["long"]) == 500
    assert params["long"].endswith("...")
    assert param_value(None) == "None"
    assert param_value(Path("/a/b")) == "/a/b"


# --------------------------------------------------------------------------- the decorator

TRAIN = """
import sys
from forgeml import track

@track.experiment("{experiment}")
def train(cfg, *, lr: float = 0.1, epochs: int = 2):
    print("training with lr", lr)
    print("a warning line", file=sys.stderr)
    for epoch in range(epochs):
        track.log_metrics({{"loss": 1.0 / (epoch + 1)}}, step=epoch)
    return track.active_run().run_id
"""


def test_decorator_records_params_config_git_environment_and_output(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.org")
    git(repo, "config", "user.name", "t")
    source = repo / "train.py"
    source.write_text(TRAIN.format(experiment=name))
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "checkout", "-q", "-b", "feature/x")
    commit = git(repo, "rev-parse", "HEAD")
    source.write_text(source.read_text() + "# an uncommitted change\n")
    (repo / "notes.txt").write_text("untracked\n")

    cfg = Config({"model": {"depth": 3}, "seed": 7, "lr": 0.5})
    stdout, stderr = sys.stdout, sys.stderr
    run_id = import_file(source).train(cfg, lr=0.01)
    assert (sys.stdout, sys.stderr) == (stdout, stderr)  # the tee is gone
    assert "training with lr 0.01" in capsys.readouterr().out  # still printed

    c = client()
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert c.get_experiment(run.info.experiment_id).name == name
    # Function arguments win over config values of the same name (they are what ran).
    assert run.data.params == {"model.depth": "3", "seed": "7", "lr": "0.01", "epochs": "2"}
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["mlflow.source.git.branch"] == "feature/x"
    assert tags["forgeml.git.dirty"] == "true"
    assert tags["mlflow.source.name"] == str(source)
    assert tags["forgeml.python"] == ".".join(map(str, sys.version_info[:3]))
    assert tags["forgeml.host"]
    assert artifacts(c, run_id) >= {
        "config.yaml",
        "output.log",
        "forgeml/environment.json",
        "forgeml/requirements.txt",
        "forgeml/git.diff",
        "forgeml/git-status.txt",
    }
    assert "+# an uncommitted change" in read_artifact(c, run_id, "forgeml/git.diff", tmp_path)
    assert "?? notes.txt" in read_artifact(c, run_id, "forgeml/git-status.txt", tmp_path)
    assert "depth: 3" in read_artifact(c, run_id, "config.yaml", tmp_path)
    env = json.loads(read_artifact(c, run_id, "forgeml/environment.json", tmp_path))
    assert env["git"]["commit"] == commit
    assert env["python"] == tags["forgeml.python"]
    assert "mlflow==" in read_artifact(c, run_id, "forgeml/requirements.txt", tmp_path)
    log = read_artifact(c, run_id, "output.log", tmp_path)
    assert "training with lr 0.01" in log
    assert "a warning line" in log
    assert [p.value for p in track.get_metrics(run_id)["loss"]] == [1.0, 0.5]


def test_decorator_without_git_or_parentheses_and_slurm_job(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", name)
    source = tmp_path / "plain.py"  # not in a git repository
    source.write_text(
        "from forgeml import track\n\n"
        "@track.experiment\n"
        "def job(n: int = 2):\n"
        "    return track.active_run().run_id\n"
    )
    run_id = import_file(source).job(n=5)
    run = client().get_run(run_id)
    assert run.data.params == {"n": "5"}
    assert run.data.tags["forgeml.slurm.job_id"] == "4242"
    assert "mlflow.source.git.commit" not in run.data.tags
    assert track.get_run(run_id).experiment == name


def test_failing_function_is_marked_failed_with_its_traceback(tmp_path: Path, name: str) -> None:
    @track.experiment(name)
    def broken(cfg: Config) -> None:
        print("about to fail")
        raise ValueError("the loss diverged at step 7")

    with pytest.raises(ValueError, match="diverged"):
        broken(Config({"lr": 1.0}))
    (record,) = track.list_runs(name)
    assert record.status == "FAILED"
    assert "ValueError: the loss diverged at step 7" in record.tags["forgeml.traceback"]
    assert "in broken" in record.tags["forgeml.traceback"]
    c = client()
    trace = read_artifact(c, record.run_id, "traceback.txt", tmp_path)
    assert trace.startswith("Traceback")
    assert "diverged" in trace
    assert "about to fail" in read_artifact(c, record.run_id, "output.log", tmp_path)
    shown = invoke("runs", "show", record.run_id[:8]).output
    assert "status:     FAILED" in shown
    assert "ValueError: the loss diverged at step 7" in shown


def test_keyboard_interrupt_marks_the_run_killed(name: str) -> None:
    with pytest.raises(KeyboardInterrupt), track.start_run(name, log_system=False):
        raise KeyboardInterrupt
    assert track.list_runs(name)[0].status == "KILLED"


# --------------------------------------------------------------------------- params, metrics


def test_params_are_immutable(name: str) -> None:
    with track.start_run(name, log_system=False, log_output=False) as run:
        track.log_params({"lr": 0.1, "opt": {"name": "sgd"}})
        track.log_params({"lr": 0.1})  # the same value again is fine
        with pytest.raises(TrackError, match=r"immutable: 'lr' is '0\.1', not '0\.2'"):
            track.log_params({"batch": 32, "lr": 0.2})
        assert run.params == {"lr": "0.1", "opt.name": "sgd"}  # nothing of the bad call
        with pytest.raises(TrackError, match="Invalid parameter name"):
            track.log_param("../escape", 1)
    assert client().get_run(run.run_id).data.params == {"lr": "0.1", "opt.name": "sgd"}


def test_metrics_are_batched(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, int] = {"log_batch": 0, "metrics": 0, "log_metric": 0}
    original = MlflowClient.log_batch

    def counting_log_batch(self: MlflowClient, run_id: str, **kwargs: Any) -> Any:
        if kwargs.get("metrics"):
            calls["log_batch"] += 1
            calls["metrics"] += len(kwargs["metrics"])
        return original(self, run_id, **kwargs)

    def no_log_metric(*args: Any, **kwargs: Any) -> None:
        calls["log_metric"] += 1

    monkeypatch.setattr(MlflowClient, "log_batch", counting_log_batch)
    monkeypatch.setattr(MlflowClient, "log_metric", no_log_metric)
    with track.start_run(name, log_system=False, log_output=False) as run:
        for step in range(1250):
            track.log_metrics({"loss": 1 / (step + 1), "acc": step / 1250}, step=step)
        track.log_metric("final", 1.0)
    assert calls["log_metric"] == 0
    assert calls["metrics"] == 2501
    assert calls["log_batch"] <= 4  # 2501 values in batches of up to 1000
    history = track.get_metrics(run.run_id)
    assert [p.step for p in history["loss"]] == list(range(1250))
    assert history["loss"][9].value == pytest.approx(0.1)
    assert history["final"] == [track.MetricPoint(0, 1.0, history["final"][0].timestamp)]
    with pytest.raises(TrackError, match="Metric 'loss' must be a number"):
        track.start_run(name, log_system=False, log_output=False).log_metrics({"loss": "high"})
    track.end_run()


def test_metrics_are_written_in_the_background(name: str) -> None:
    cfg = {"tracking": {"flush_interval": 0.2, "log_system": False, "log_output": False}}
    with track.start_run(name, cfg=cfg) as run:
        track.log_metrics({"x": 1.0})
        deadline = time.monotonic() + 10
        while not client().get_run(run.run_id).data.metrics and time.monotonic() < deadline:
            time.sleep(0.05)  # nobody flushes: the background thread writes it
        assert client().get_run(run.run_id).data.metrics == {"x": 1.0}


def test_metrics_that_fail_to_send_stay_queued_and_the_queue_is_bounded(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    from forgeml.track import _values

    original = MlflowClient.log_batch
    calls = {"metrics": 0, "fail": True}

    def refusing_after_the_first(self: MlflowClient, run_id: str, **kwargs: Any) -> Any:
        if kwargs.get("metrics"):
            calls["metrics"] += 1
            if calls["fail"] and calls["metrics"] >= 2:
                raise MlflowException("the store refused the batch")  # not a connection error
        return original(self, run_id, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", refusing_after_the_first)
    # Batches of 10 values, so 35 values (below the background thread's threshold) take 4.
    monkeypatch.setattr(_run, "chunks", lambda items, size: _values.chunks(items, 10))
    cfg = {"tracking": {"flush_interval": 3600, "log_system": False, "log_output": False}}
    with track.start_run(name, cfg=cfg) as run:
        for step in range(35):
            run.log_metrics({"x": float(step)}, step=step)
        with pytest.raises(TrackError, match="the store refused the batch"):
            run.flush()
        assert len(run._buffer) == 25  # the failed batch and the ones after it, in order
        with pytest.raises(TrackError, match="the store refused the batch"):
            run.flush()  # still failing: nothing lost, nothing sent twice
        assert [row[3] for row in run._buffer] == list(range(10, 35))
        monkeypatch.setattr(_run, "MAX_PENDING", 20)
        with pytest.raises(TrackError, match=r"more than 20 values .* the 5 oldest were dropped"):
            run.flush()
        calls["fail"] = False
        run.flush()
        assert run._buffer == []
    steps = [point.step for point in track.get_metrics(run.run_id)["x"]]
    assert steps == [*range(10), *range(15, 35)]


def test_no_active_run_warns_once_and_other_ranks_log_nothing(
    name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="forgeml.track"):
        track.log_metrics({"x": 1})
        track.log_metrics({"x": 2})
    assert sum("no run is active" in r.getMessage() for r in caplog.records) == 1

    monkeypatch.setenv("RANK", "1")
    with track.start_run(name, cfg={"tracking": {"run_id": "r-123"}}) as run:
        assert not run.enabled
        assert run.run_id == "r-123"
        track.log_params({"a": 1})
        track.log_metrics({"x": 1})
        assert track.log_model(Point(1)) is None
    assert track.start_run(name, cfg={"rank": 2}).enabled is False
    track.end_run()
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_PROCID", "3")  # a Slurm task: the same rule as notifications
    assert track.start_run(name).enabled is False
    track.end_run()
    assert track.is_rank_zero() is False
    monkeypatch.delenv("SLURM_PROCID")
    assert track.list_runs(name) == []


def test_secrets_are_masked_in_params_and_config(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("forgeml.secrets")
    monkeypatch.setenv("MY_DB_PASSWORD", "hunter2-very-secret")
    monkeypatch.setenv("FORGEML_SECRET_NAMES", "MY_DB_PASSWORD")
    cfg = {"db": {"url": "postgres://u:hunter2-very-secret@h/db"}}
    with track.start_run(name, cfg=cfg, log_system=False, log_output=False) as run:
        pass
    params = client().get_run(run.run_id).data.params
    assert params["db.url"] == "postgres://u:***@h/db"
    assert "hunter2" not in read_artifact(client(), run.run_id, "config.yaml", tmp_path)


# --------------------------------------------------------------------------- models, resume


def test_log_model_stores_an_archive_and_registers_it(name: str) -> None:
    with track.start_run(name, log_system=False, log_output=False) as run:
        first = track.log_model(Point(1, y=2), registered_name=f"{name}-point")
        second = track.log_model(Point(3), name="better", registered_name=f"{name}-point")
    assert first is not None
    assert second is not None
    assert (first.version, second.version) == (1, 2)
    assert first.artifact_path == "models/Point"
    assert first.model_uri == f"models:/{name}-point/1"
    assert "models/Point/model.dry" in artifacts(client(), run.run_id)
    versions = client().search_model_versions(f"name='{name}-point'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert {v.run_id for v in versions} == {run.run_id}
    loaded = track.load_model(f"{name}-point", version=1)
    assert isinstance(loaded, Point)
    assert (loaded.x, loaded.y) == (1, 2)
    assert track.load_model(f"models:/{name}-point/latest").x == 3
    assert track.load_model(f"runs:/{run.run_id}/models/Point").y == 2
    with pytest.raises(TrackError, match="stores forgeml Objects"):
        track.log_model({"not": "an Object"}, run=run)


def test_resume_and_resume_checkpoint(tmp_path: Path, name: str) -> None:
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"epoch-3-weights")
    with track.start_run(name, params={"lr": 0.1}, log_system=False) as first:
        assert track.resume_checkpoint() == (None, False)  # nothing saved yet
        track.log_artifact(ckpt)
        track.log_metrics({"loss": 0.5}, step=3)
    assert client().get_run(first.run_id).info.status == "FINISHED"

    path, restart = track.resume_checkpoint(first.run_id)
    assert restart is True
    assert Path(path or "").read_bytes() == b"epoch-3-weights"

    # Resuming: the run is RUNNING again, keeps its params and checks new ones against them.
    with pytest.raises(TrackError, match=r"immutable: 'lr' is '0\.1', not '0\.2'"):
        track.start_run(run_id=first.run_id, params={"lr": 0.2}, log_system=False)
    with track.start_run(run_id=first.run_id, params={"lr": 0.1}, log_system=False) as again:
        assert again.resumed
        assert again.experiment == name
        assert client().get_run(first.run_id).info.status == "RUNNING"
        path, restart = track.resume_checkpoint()  # the active (resumed) run
        assert restart is True
        assert Path(path or "").read_bytes() == b"epoch-3-weights"
        track.log_metrics({"loss": 0.25}, step=4)
    resumed = client().get_run(first.run_id)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["forgeml.resumes"] == "2"  # the failed attempt counts too
    assert [p.step for p in track.get_metrics(first.run_id)["loss"]] == [3, 4]
    assert {"output.log", "output-resume2.log"} <= artifacts(client(), first.run_id)

    # A new run from the weights of another: restart=False.
    with track.start_run(name, log_system=False, log_output=False):
        path, restart = track.resume_checkpoint(run_id_pretrained=first.run_id)
        assert restart is False
        assert Path(path or "").read_bytes() == b"epoch-3-weights"
    assert track.resume_checkpoint(None, None) == (None, False)
    with pytest.raises(TrackError, match=r"has no artifact 'best\.ckpt'"):
        track.resume_checkpoint(run_id_pretrained=first.run_id, filename="best.ckpt")
    with pytest.raises(TrackError, match="no such run"):
        track.start_run(run_id="0" * 32)


# --------------------------------------------------------------------------- app.run


def test_app_run_tracks_main_when_the_config_asks(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    seen: dict[str, Any] = {}

    @track.experiment
    def inner(cfg: Config, *, width: int = 4) -> None:
        seen["same run"] = track.active_run()

    def main(cfg: Config) -> str:
        print("main is running")
        track.log_metrics({"score": cfg.width * 2})
        inner(cfg, width=cfg.width)
        run = track.active_run()
        assert run is not None
        assert seen["same run"] is run
        return str(run.run_id)

    try:
        run_id = app.run(main, {"width": 3, "tracking": {"experiment": name}})
        with pytest.raises(SystemExit):
            app.run(main, {"tracking": {"experimnt": name}})
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
    run = client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["width"] == "3"
    assert run.data.params["seed"] == "1204"  # the resolved config, built-in options included
    assert run.data.metrics == {"score": 6.0}
    assert "main is running" in read_artifact(client(), run_id, "output.log", tmp_path)
    assert app.run(lambda cfg: track.active_run(), {"width": 1}) is None  # no tracking section


DIST = """
import os
from forgeml import app, track

def main(cfg):
    rank = int(os.environ["RANK"])
    print(f"hello from rank {rank}")
    track.log_metrics({"rank_seen": rank})
    track.log_params({"world": cfg.world_size})
    run = track.active_run()
    assert run is not None and run.enabled == (rank == 0)

if __name__ == "__main__":
    app.run(main)
"""


@pytest.mark.slow
def test_dist_only_rank_zero_logs(tmp_path: Path, home: Path, name: str) -> None:
    pytest.importorskip("torch", reason="--dist torch needs torch")
    script = tmp_path / "dist.py"
    script.write_text(textwrap.dedent(DIST))
    env = {k: v for k, v in os.environ.items() if k not in _ENV}
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--dist",
            "torch",
            "--world-size",
            "2",
            "--dist-port",
            str(free_port()),
            "--cfg",
            f"tracking.experiment={name}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "hello from rank 1" in done.stdout
    assert "hello from rank 0" in done.stdout
    (record,) = track.list_runs(name)
    assert record.status == "FINISHED"
    assert record.params["world"] == "2"
    assert record.params["dist"] == "torch"
    assert [p.value for p in track.get_metrics(record.run_id)["rank_seen"]] == [0.0]
    log = read_artifact(client(), record.run_id, "output.log", tmp_path)
    assert "hello from rank 0" in log
    assert "hello from rank 1" not in log


# --------------------------------------------------------------------------- the CLI


def test_runs_ls_show_compare(name: str) -> None:
    ids = []
    for lr in (0.1, 0.01):
        with track.start_run(name, params={"lr": lr, "opt": "sgd"}, log_system=False) as run:
            for step in range(3):
                track.log_metrics({"loss": lr * (3 - step)}, step=step)
        ids.append(str(run.run_id))

    listed = json.loads(invoke("runs", "ls", "--experiment", name, "--json").output)
    assert [r["run_id"] for r in listed] == ids[::-1]  # newest first
    assert listed[0]["params"] == {"lr": "0.01", "opt": "sgd"}
    assert listed[0]["status"] == "FINISHED"
    text = invoke("runs", "ls", "-e", name).output
    assert "LOSS" in text
    assert ids[0][:8] in text
    assert "FINISHED" in text

    shown = json.loads(invoke("runs", "show", ids[0], "--json").output)
    assert [p["value"] for p in shown["metric_history"]["loss"]] == pytest.approx([0.3, 0.2, 0.1])
    assert "output.log" in shown["artifacts"]
    text = invoke("runs", "show", ids[0][:10]).output
    assert "loss" in text
    assert "0.1" in text
    assert "lr" in text

    compared = json.loads(invoke("runs", "compare", *ids, "--json").output)
    assert compared["params"] == {"lr": {ids[0]: "0.1", ids[1]: "0.01"}}  # only what differs
    assert compared["metrics"]["loss"] == {ids[0]: pytest.approx(0.1), ids[1]: pytest.approx(0.01)}
    assert "opt" in json.loads(invoke("runs", "compare", *ids, "--all", "--json").output)["params"]
    assert "lr" in invoke("runs", "compare", *ids).output

    result = CliRunner().invoke(cli, ["runs", "show", "zzzz"], prog_name="forgeml")
    assert result.exit_code == 1
    assert f"No run 'zzzz' in the tracking store {track.embedded_uri()}." in result.output
    assert "No runs in experiment 'nope'" in invoke("runs", "ls", "-e", "nope").output
    assert invoke("track", "uri").output.strip() == track.embedded_uri()


# --------------------------------------------------------------------------- a real server


@pytest.mark.slow
def test_real_server_params_metrics_artifacts_models(
    mlflow_server: MlflowServer, tmp_path: Path, name: str
) -> None:
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"server weights")
    cfg = Config({"lr": 0.3, "tracking": {"uri": mlflow_server.uri, "experiment": name}})

    @track.experiment
    def train(cfg: Config) -> str:
        print("on the server")
        for step in range(1500):
            track.log_metrics({"loss": 1 / (step + 1)}, step=step)
        track.log_artifact(ckpt, "checkpoints")
        info = track.log_model(Point(5), registered_name=f"{name}-model")
        assert info is not None
        assert info.version == 1
        return str(track.active_run().run_id)  # type: ignore[union-attr]

    run_id = train(cfg)
    c = client(mlflow_server.uri)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # uploaded through the server
    assert run.data.params["lr"] == "0.3"
    assert artifacts(c, run_id) >= {"config.yaml", "output.log", "checkpoints/last.ckpt"}
    assert "on the server" in read_artifact(c, run_id, "output.log", tmp_path)
    metrics = track.get_metrics(run_id, uri=mlflow_server.uri)
    assert len(metrics["loss"]) == 1500
    path, restart = track.resume_checkpoint(
        run_id, filename="checkpoints/last.ckpt", uri=mlflow_server.uri
    )
    assert restart
    assert Path(path or "").read_bytes() == b"server weights"
    model = track.load_model(f"{name}-model", uri=mlflow_server.uri)
    assert isinstance(model, Point)
    assert model.x == 5
    records = json.loads(
        invoke("runs", "ls", "--uri", mlflow_server.uri, "-e", name, "--json").output
    )
    assert [r["run_id"] for r in records] == [run_id]


@pytest.mark.slow
def test_unreachable_server_records_offline_then_sync_pushes(
    mlflow_server: MlflowServer, tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    ckpt = tmp_path / "weights.bin"
    ckpt.write_bytes(b"offline weights")

    @track.experiment(name, uri=dead)
    def train(cfg: Config) -> str:
        print("working without a server")
        for step in range(5):
            track.log_metrics({"loss": 1 / (step + 1)}, step=step)
        track.log_artifact(ckpt)
        track.log_model(Point(7), registered_name=f"{name}-offline")
        run = track.active_run()
        assert run is not None
        assert run.offline
        return str(run.run_id)

    with caplog.at_level(logging.WARNING, logger="forgeml.track"):
        local_id = train(Config({"lr": 0.2}))
        train(Config({"lr": 0.3}))  # a second run: no second warning
    warnings = [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(warnings) == 1
    assert dead in warnings[0]
    assert "forgeml track sync" in warnings[0]

    pending = json.loads(invoke("track", "sync", "--dry-run", "--json").output)
    assert {p["local_run_id"] for p in pending} >= {local_id}
    assert all(p["state"] == "pending" for p in pending)

    still_dead = CliRunner().invoke(cli, ["track", "sync"], prog_name="forgeml")
    assert still_dead.exit_code == 1
    assert f"failed {local_id}: The tracking server {dead} cannot be reached" in still_dead.output
    out = invoke("track", "sync", "--uri", mlflow_server.uri).output
    assert f"synced {local_id} -> run" in out
    (remote,) = [r for r in track.list_runs(name, uri=mlflow_server.uri) if r.params["lr"] == "0.2"]
    assert remote.status == "FINISHED"
    assert remote.tags["forgeml.offline.run_id"] == local_id
    c = client(mlflow_server.uri)
    history = c.get_metric_history(remote.run_id, "loss")
    local_history = track.get_metrics(local_id, uri=_offline.offline_uri())["loss"]
    assert [(m.step, m.value, m.timestamp) for m in history] == [
        (p.step, p.value, p.timestamp) for p in local_history
    ]
    assert artifacts(c, remote.run_id) >= {"weights.bin", "output.log", "config.yaml"}
    assert "working without a server" in read_artifact(c, remote.run_id, "output.log", tmp_path)
    versions = c.search_model_versions(f"name='{name}-offline'")
    assert {v.run_id for v in versions} == {
        r.run_id for r in track.list_runs(name, uri=mlflow_server.uri)
    }
    # Idempotent: nothing left to push, nothing pushed twice.
    assert "Nothing to sync" in invoke("track", "sync", "--uri", mlflow_server.uri).output
    assert len(track.list_runs(name, uri=mlflow_server.uri)) == 2


@pytest.mark.slow
def test_server_lost_mid_run_goes_offline_and_sync_completes_the_run(
    mlflow_server: MlflowServer, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = TcpProxy(mlflow_server.port)
    with caplog.at_level(logging.WARNING, logger="forgeml.track"):
        run = track.start_run(name, uri=proxy.uri, params={"lr": 0.1}, log_system=False)
        track.log_metrics({"loss": 1.0}, step=0)
        track.flush()
        assert not run.offline
        proxy.close()  # the server goes away
        track.log_metrics({"loss": 0.5}, step=1)
        track.flush()
        assert run.offline
        track.log_metrics({"loss": 0.25}, step=2)
        track.set_tags({"phase": "offline"})
        run.end()
    assert sum("cannot be reached" in r.getMessage() for r in caplog.records) == 1
    c = client(mlflow_server.uri)
    assert c.get_run(str(run.run_id)).info.status == "RUNNING"  # the server never heard the end
    proxy = TcpProxy(mlflow_server.port, port=proxy.port)  # the server is back at its address
    try:
        results = track.sync()
    finally:
        proxy.close()
    (mine,) = [r for r in results if r["experiment"] == name]
    assert mine["run_id"] == run.run_id  # the same run, completed
    after = c.get_run(str(run.run_id))
    assert after.info.status == "FINISHED"
    assert after.data.tags["phase"] == "offline"
    assert [(m.step, m.value) for m in c.get_metric_history(str(run.run_id), "loss")] == [
        (0, 1.0),
        (1, 0.5),
        (2, 0.25),
    ]
    assert "output.log" in artifacts(c, str(run.run_id))
