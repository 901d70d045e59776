"""forgeml.jobs: scripts, argument sets, manifests, and real jobs on a local Slurm cluster.

The cluster tests (``slow``) submit real jobs to ``scripts/slurm-local`` (slurmctld +
slurmd on 127.0.0.1, started once per session by the ``slurm_cluster`` fixture): a 2-task
torch.distributed all-reduce under srun, a 4-task array with overrides and a tracking run
per task, a requeue cycle that resumes its run from a checkpoint, relaunch, stop, cancel
and status. They skip, saying why, without Slurm or root.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import forgeml.jobs as jobs
from forgeml import JobsError
from forgeml.cli import cli
from slurm_cluster import jobs_home, slurm_cluster, until

__all__ = ["jobs_home", "slurm_cluster"]  # fixtures used by name below

PY = sys.executable


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- argument sets


def test_grid_is_the_cartesian_product_in_order() -> None:
    assert jobs.grid("lr=1e-3,1e-4 bs=32,64") == [
        ["lr=1e-3", "bs=32"],
        ["lr=1e-3", "bs=64"],
        ["lr=1e-4", "bs=32"],
        ["lr=1e-4", "bs=64"],
    ]
    assert jobs.grid(["model.depth=2,3,4"]) == [
        ["model.depth=2"],
        ["model.depth=3"],
        ["model.depth=4"],
    ]


@pytest.mark.parametrize("spec", ["lr", "lr=", "=1,2"])
def test_a_bad_grid_item_says_how_to_write_one(spec: str) -> None:
    with pytest.raises(JobsError, match="key=value1,value2") as info:
        jobs.grid(spec)
    assert repr(spec) in str(info.value)


def test_argument_sets_from_yaml_lists_and_grids(tmp_path: Path) -> None:
    listed = write(
        tmp_path / "sets.yml",
        """
        - {lr: 0.001, opt: adam, deep: true}
        - [lr=0.01, opt=sgd]
        - lr=0.1 opt=sgd
        """,
    )
    assert jobs.load_sets(listed) == [
        ["lr=0.001", "opt=adam", "deep=true"],
        ["lr=0.01", "opt=sgd"],
        ["lr=0.1", "opt=sgd"],
    ]
    gridded = write(tmp_path / "grid.yml", "grid: {lr: [1, 2], bs: [8]}\n")
    assert jobs.load_sets(gridded) == [["lr=1", "bs=8"], ["lr=2", "bs=8"]]
    with pytest.raises(JobsError, match="non-empty YAML list"):
        jobs.load_sets(write(tmp_path / "bad.yml", "lr: 1\n"))
    with pytest.raises(JobsError, match="does not exist"):
        jobs.load_sets(tmp_path / "nope.yml")


# ----------------------------------------------------------------------------- the script


def test_the_script_quotes_every_word_and_checks_sbatch_values(tmp_path: Path) -> None:
    nasty = ["python", "t.py", "--msg", "it's $(rm -rf /) `x`", "a b;c"]
    options = jobs.sbatch_options(
        name="sweep",
        output=str(tmp_path / "%j.out"),
        time_limit="00:10:00",
        requeue=True,
        signal_seconds=90,
        array="0-3%2",
    )
    assert "--signal=B:USR1@90" in options
    assert "--requeue" in options
    assert "--array=0-3%2" in options
    assert "--time=00:10:00" in options
    script = jobs.render_script(options, tmp_path, nasty, "test")
    exec_line = next(line for line in script.splitlines() if line.startswith("exec "))
    assert shlex.split(exec_line)[1:] == [
        PY,
        "-m",
        "forgeml.jobs._task",
        str(tmp_path),
        "--",
        *nasty,
    ]
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    with pytest.raises(JobsError, match="one word") as info:
        jobs.sbatch_options(name="two words", output="x")
    assert "'two words'" in str(info.value)
    with pytest.raises(JobsError, match="--time must be a Slurm time limit"):
        jobs.sbatch_options(name="n", output="x", time_limit="ten minutes")
    assert not any(o.startswith("--output") for o in jobs.sbatch_options(name="n"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu", "2", "--", "python", "train.py"], "Did you mean '--gpus'?"),
        (["python", "train.py", "--cfg", "app.yml"], "Options of the command to run go after '--'"),
    ],
)
@pytest.mark.parametrize("command", ["launch", "render"])
def test_unknown_options_before_the_dashes_are_refused(
    command: str, args: list[str], message: str
) -> None:
    extra = ["--k8s", "--image", "img"] if command == "render" else []
    result = CliRunner().invoke(cli, ["jobs", command, *extra, *args])
    assert result.exit_code == 2, result.output
    assert "Unknown option" in result.output
    assert message in result.output
    assert "command:" not in result.output  # nothing rendered or submitted


def test_grid_and_args_file_together_are_refused(tmp_path: Path) -> None:
    sets = write(tmp_path / "sets.yml", "- lr=1\n")
    options = ["--k8s", "--image", "i", "--args-file", str(sets), "--grid", "lr=2"]
    result = CliRunner().invoke(cli, ["jobs", "render", *options, "--", "python", "t.py"])
    assert result.exit_code == 1
    assert "Give --args-file or --grid, not both" in result.output


def test_launch_without_slurm_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(jobs._slurm, "FALLBACK_DIRS", ())
    with pytest.raises(JobsError, match=r"'sbatch' is not on PATH.*slurm-local"):
        jobs.launch(["true"])
    assert not list((tmp_path / "home" / "jobs").iterdir())  # no record of a job not submitted


def test_a_failed_scontrol_is_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from forgeml.jobs import _slurm

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(_slurm, "FALLBACK_DIRS", ())
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))
    _slurm.clear_config_cache()
    assert _slurm.slurm_config(str(tmp_path / "slurm.conf")) == {}
    assert str(tmp_path / "slurm.conf") not in _slurm._configs  # asked again next time
    assert _slurm.cluster_name() is None  # no slurm.conf to read
    (tmp_path / "slurm.conf").write_text("# test\nclustername = alpha\n")
    assert _slurm.cluster_name() == f"alpha@{tmp_path / 'slurm.conf'}"


def test_records_newest_first_and_on_this_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forgeml.jobs._records import find_record, write_json

    monkeypatch.setenv("FORGEML_HOME", str(tmp_path))
    root = tmp_path / "jobs"
    for key, submitted, cluster in (("a", 1.0, "c@/x"), ("b", 2.0, "c@/y"), ("c", 3.0, None)):
        write_json(root / key / "job.json", {"id": "7", "submitted": submitted, "cluster": cluster})
    # Slurm reused id 7: the newest launch wins, or the newest one on the cluster asked about.
    assert Path(find_record("7")["dir"]).name == "c"
    write_json(root / "c" / "job.json", {"id": "7", "submitted": 3.0, "cluster": "d@/z"})
    assert Path(find_record("7", cluster="c@/x")["dir"]).name == "a"
    assert Path(find_record("7_1", cluster="c@/y")["dir"]).name == "b"
    with pytest.raises(JobsError, match=r"No job '7'.*Known: none yet"):
        find_record("7", cluster="e@/w")


def test_unknown_jobs_name_the_known_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path))
    with pytest.raises(JobsError, match=r"No job '42'.*Known: none yet"):
        jobs.log_path("42")
    result = CliRunner().invoke(cli, ["jobs", "log", "42"])
    assert result.exit_code == 1
    assert "Error: No job '42'" in result.output


def test_squeue_task_ranges() -> None:
    from forgeml.jobs._slurm import _task_range

    assert _task_range("3") == [3]
    assert _task_range("[0-3%2]") == [0, 1, 2, 3]
    assert _task_range("1,4-5") == [1, 4, 5]
    assert _task_range("N/A") == [None]


# ----------------------------------------------------------------------------- Kubernetes


def test_kubernetes_manifests_validate_against_the_schema(tmp_path: Path) -> None:
    import kubernetes_validate

    single = jobs.render_k8s(
        ["python", "train.py", "--cfg", "app.yml"],
        image="registry.example/forgeml:1",
        name="Train_Digits",
        time="01:30:00",
        gpus=1,
        cpus_per_task=4,
        mem="16G",
        requeue=True,
        max_restarts=2,
        secret="forgeml-secrets",
    )
    kubernetes_validate.validate(single, "1.30", strict=True)
    assert single["metadata"]["name"] == "train-digits"
    assert single["spec"]["activeDeadlineSeconds"] == 5400
    assert single["spec"]["backoffLimit"] == 2
    container = single["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1, "memory": "16Gi"}
    assert container["envFrom"] == [{"secretRef": {"name": "forgeml-secrets"}}]

    sets = jobs.grid("lr=1e-3,1e-4 bs=32,64")
    indexed = jobs.render_k8s(
        ["python", "train.py"], image="img:1", overrides=sets, array_parallelism=2
    )
    kubernetes_validate.validate(indexed, "1.30", strict=True)
    spec = indexed["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 2)
    script = spec["template"]["spec"]["containers"][0]["command"][2]
    for index, words in enumerate(sets):  # each index runs its own overrides
        out = subprocess.run(
            ["bash", "-c", script.replace("exec ", "echo "), "x"],
            env={"JOB_COMPLETION_INDEX": str(index), "PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.split() == ["python", "train.py", *words]

    result = invoke(
        "jobs",
        "render",
        "--k8s",
        "--image",
        "img:1",
        "--grid",
        "lr=1,2",
        "-o",
        str(tmp_path / "job.yml"),
        "--",
        "python",
        "train.py",
    )
    assert result.exit_code == 0, result.output
    kubernetes_validate.validate(
        yaml.safe_load((tmp_path / "job.yml").read_text()), "1.30", strict=True
    )


@pytest.mark.parametrize(
    ("mem", "quantity"), [("4000", "4000Mi"), ("16G", "16Gi"), ("512M", "512Mi"), ("2t", "2Ti")]
)
def test_slurm_memory_becomes_a_kubernetes_quantity(mem: str, quantity: str) -> None:
    manifest = jobs.render_k8s(["true"], image="i", mem=mem)
    resources = manifest["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"]["memory"] == resources["requests"]["memory"] == quantity


@pytest.mark.parametrize(
    ("limit", "seconds"),
    [("30", 1800), ("1:30", 90), ("1-2", 93600), ("2:00:00", 7200), ("UNLIMITED", None)],
)
def test_time_limits_become_a_deadline(limit: str, seconds: int | None) -> None:
    spec = jobs.render_k8s(["true"], image="i", time=limit)["spec"]
    assert spec.get("activeDeadlineSeconds") == seconds
    with pytest.raises(JobsError, match=r"--time must be a Slurm time limit.*'soon'"):
        jobs.render_k8s(["true"], image="i", time="soon")


def test_apptainer_commands_one_per_task() -> None:
    lines = jobs.render_apptainer(
        ["python", "train.py"], image="forgeml.sif", overrides=[["lr=1"], ["lr=2"]], gpus=1
    )
    assert lines == [
        ["apptainer", "exec", "--nv", "forgeml.sif", "python", "train.py", "lr=1"],
        ["apptainer", "exec", "--nv", "forgeml.sif", "python", "train.py", "lr=2"],
    ]
    result = invoke(
        "jobs", "render", "--apptainer", "--image", "a.sif", "--", "python", "t.py", "it's"
    )
    assert result.exit_code == 0
    assert "apptainer exec a.sif python t.py 'it'\"'\"'s'" in result.output


def test_launch_file_unknown_key(tmp_path: Path) -> None:
    launch_file = write(tmp_path / "sweep.yml", "command: python t.py\ntimee: 5\n")
    result = CliRunner().invoke(cli, ["jobs", "launch", str(launch_file)])
    assert result.exit_code == 1
    assert "Unknown key 'timee'" in result.output
    assert "Did you mean 'time'?" in result.output


# ----------------------------------------------------------------------------- checkpoints

SIGNALLED = """
import os, signal, sys, time
from pathlib import Path
from forgeml import app

def main(cfg):
    steps = []
    app.on_checkpoint(lambda: Path("ckpt").write_text(str(len(steps))) and Path("ckpt"))
    os.kill(os.getpid(), signal.SIGUSR1 if sys.argv[1] == "requeue" else signal.SIGTERM)
    Path("signalled").write_text(str(len(steps)))  # the handler only took note
    while True:
        steps.append(1)  # one training step
        time.sleep(0.01)
        if sys.argv[2] == "poll" and len(steps) == 3:
            app.checkpoint_requested()  # a step boundary

app.run(main, {})
"""


@pytest.mark.parametrize(
    ("signal_name", "mode", "code"),
    [("requeue", "poll", 75), ("stop", "poll", 130), ("requeue", "fallback", 75)],
)
def test_the_checkpoint_is_saved_at_a_step_boundary_or_by_the_fallback(
    tmp_path: Path, signal_name: str, mode: str, code: int
) -> None:
    write(tmp_path / "prog.py", SIGNALLED)
    state = tmp_path / "task.json"
    env = {
        **os.environ,
        "FORGEML_HOME": str(tmp_path / "home"),
        "FORGEML_JOB_STATE": str(state),
        "FORGEML_JOB_REQUEUE": "1",
        "FORGEML_JOB_SIGNAL_SECONDS": "1",  # the fallback waits half of it
    }
    done = subprocess.run(
        [PY, "prog.py", signal_name, mode],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == code, done.stderr
    assert (tmp_path / "signalled").read_text() == "0"
    saved_at = int((tmp_path / "ckpt").read_text())
    if mode == "poll":
        assert saved_at == 3  # exactly at the boundary where the loop polled
        assert "was not called" not in done.stderr
    else:
        assert saved_at > 3  # about 0.5 s of steps later, wherever the loop was
        assert "checkpoint_requested() was not called within" in done.stderr
    assert json.loads(state.read_text())["checkpoint"] == str(tmp_path / "ckpt")


def test_checkpoint_requested_is_false_without_a_signal() -> None:
    from forgeml import app

    assert app.checkpoint_requested() is False


# ----------------------------------------------------------------------------- real jobs

ALLREDUCE = """
import json, os
from forgeml import app
from forgeml.argparse import ArgumentParser

def main(cfg):
    import torch
    import torch.distributed as dist
    value = torch.tensor([float(cfg.rank + 1)])
    dist.all_reduce(value)
    record = {"rank": cfg.rank, "world": cfg.world_size, "sum": value.item(),
              "master": os.environ["MASTER_ADDR"], "local_rank": cfg.local_rank,
              "backend": dist.get_backend()}
    with open(f"rank{cfg.rank}.json", "w") as f:
        json.dump(record, f)

if __name__ == "__main__":
    app.run(main, ArgumentParser().parse_args())
"""


@pytest.mark.slow
def test_dist_slurm_runs_a_torch_all_reduce_under_srun(jobs_home: Path) -> None:
    write(jobs_home / "allreduce.py", ALLREDUCE)
    done = subprocess.run(
        [
            PY,
            "allreduce.py",
            "--dist",
            "slurm",
            "--slurm-ntasks-per-node",
            "2",
            "--slurm-cpus-per-task",
            "1",
            "--slurm-partition",
            "debug",
            "--slurm-mem",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Submitted Slurm job" in done.stdout
    job_id = done.stdout.split("Submitted Slurm job ")[1].split()[0]
    (record,) = [r for r in jobs.list_jobs() if r["id"] == job_id]
    script = (Path(record["dir"]) / "job.sh").read_text()
    assert "#SBATCH --ntasks-per-node=2" in script
    assert "#SBATCH --partition=debug" in script
    final = jobs.wait(job_id, timeout=110)
    log = jobs.log_path(job_id).read_text()
    assert final[job_id].state == "COMPLETED", log
    ranks = [json.loads((jobs_home / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["sum"] for r in ranks] == [3.0, 3.0]  # 1 + 2, all-reduced over gloo
    assert {(r["rank"], r["world"], r["local_rank"]) for r in ranks} == {(0, 2, 0), (1, 2, 1)}
    assert {r["master"] for r in ranks} == {"localhost"}  # scontrol show hostnames
    assert {r["backend"] for r in ranks} == {"gloo"}


TRAIN = """
import json, os, time
from pathlib import Path
from forgeml import app, track
from forgeml.argparse import ArgumentParser

def main(cfg):
    run = track.active_run()
    run_id = run.run_id if run is not None else None
    task = os.environ.get("FORGEML_TASK", "0")
    if cfg.resume:
        state = json.loads(Path(cfg.resume).read_text())
        Path(f"resumed-{task}-{os.environ.get('SLURM_JOB_ID')}.json").write_text(
            json.dumps({"resume": cfg.resume, "step": state["step"], "run": run_id}))
        if run is not None:
            track.log_metric("resumed_at", state["step"])
        return
    state = {"step": 0}

    def save():
        path = Path(f"ckpt-{task}.json").absolute()
        path.write_text(json.dumps(state))
        return path

    app.on_checkpoint(save)
    Path(f"out-{task}.json").write_text(json.dumps({"lr": cfg.get("lr"), "run": run_id}))
    while cfg.get("wait"):
        state["step"] += 1  # one training step
        time.sleep(0.05)
        app.checkpoint_requested()  # a step boundary: saves and requeues here when signalled

if __name__ == "__main__":
    parser = ArgumentParser()
    parser.add_argument("--wait", action="store_true")
    app.run(main, parser.parse_args())
"""


def _tracked_app(home: Path) -> None:
    write(home / "train.py", TRAIN)
    write(
        home / "app.yml",
        f"""
        lr: 0.5
        tracking:
          uri: sqlite:///{home}/mlflow.db
          experiment: jobs-test
          log_system: false
        """,
    )


@pytest.mark.slow
def test_an_array_gives_each_task_its_overrides_and_its_own_run(jobs_home: Path) -> None:
    _tracked_app(jobs_home)
    result = invoke(
        "jobs",
        "launch",
        "--grid",
        "lr=0.1,0.2 bs=8,16",
        "--cpus-per-task",
        "1",
        "--name",
        "sweep",
        "--json",
        "--",
        PY,
        "train.py",
        "--cfg",
        "app.yml",
    )
    assert result.exit_code == 0, result.output
    job = json.loads(result.output)
    assert job["tasks"] == 4
    final = jobs.wait(job["id"], timeout=110)
    assert {s.state for s in final.values()} == {"COMPLETED"}, [
        jobs.log_path(k).read_text() for k in final
    ]
    # One status call for the whole array (and its JSON form from the CLI).
    status = json.loads(invoke("jobs", "status", job["id"], "--json").output)
    assert [t["id"] for t in status] == [f"{job['id']}_{i}" for i in range(4)]
    assert {t["state"] for t in status} == {"COMPLETED"}
    outs = [json.loads((jobs_home / f"out-{i}.json").read_text()) for i in range(4)]
    assert [o["lr"] for o in outs] == [0.1, 0.1, 0.2, 0.2]
    runs = [o["run"] for o in outs]
    assert len(set(runs)) == 4
    assert None not in runs
    (listed,) = json.loads(invoke("jobs", "ls", "--json").output)
    assert [t["run_id"] for t in listed["tasks"]] == runs
    assert [t["overrides"] for t in listed["tasks"]][1] == ["lr=0.1", "bs=16"]
    from forgeml.track import get_run

    record = get_run(runs[3], uri=f"sqlite:///{jobs_home}/mlflow.db")
    assert record.params["lr"] == "0.2"
    assert record.params["bs"] == "16"
    log = invoke("jobs", "log", f"{job['id']}_2").output
    assert "task 2 of job" in log
    assert "lr=0.2 bs=8" in log


@pytest.mark.slow
def test_requeue_checkpoints_and_resumes_the_same_run_then_relaunch(jobs_home: Path) -> None:
    _tracked_app(jobs_home)
    job = jobs.launch(
        [PY, "train.py", "--cfg", "app.yml", "--wait"],
        requeue=True,
        time="10",
        signal_seconds=60,
        cpus_per_task=1,
        max_restarts=2,
    )
    assert "#SBATCH --signal=B:USR1@60" in (job.dir / "job.sh").read_text()
    until(lambda: (jobs_home / "out-0.json").exists(), 60, "the job to start")
    first_run = json.loads((jobs_home / "out-0.json").read_text())["run"]
    # What Slurm does 60 s before the time limit, sent now.
    jobs.signal_requeue(job.id)
    until(lambda: jobs.status(job)[job.id].state == "PENDING", 60, "the requeue")
    assert jobs.status(job)[job.id].reason == "BeginTime"  # Slurm's hold after a requeue
    jobs.start_now(job.id)
    final = jobs.wait(job, timeout=90)
    log = job.log().read_text()
    assert final[job.id].state == "COMPLETED", log
    assert "saving a checkpoint" in log
    assert "requeueing job" in log
    (resumed_file,) = jobs_home.glob("resumed-0-*.json")
    resumed = json.loads(resumed_file.read_text())
    assert resumed["run"] == first_run  # the tracking run continues
    assert resumed["resume"] == str(jobs_home / "ckpt-0.json")
    state = json.loads((job.dir / "tasks" / "0.json").read_text())
    assert state["restarts"] == 1
    assert state["run_id"] == first_run
    assert state["exit_code"] == 0
    from forgeml.track import get_run

    run = get_run(first_run, uri=f"sqlite:///{jobs_home}/mlflow.db")
    assert run.tags.get("forgeml.resumes") == "1"

    # relaunch --run-id: a new job, resuming that run from its last checkpoint.
    result = invoke("jobs", "relaunch", "--run-id", first_run, "--json")
    assert result.exit_code == 0, result.output
    again = json.loads(result.output)["id"]
    assert jobs.wait(again, timeout=90)[again].state == "COMPLETED", jobs.log_path(
        again
    ).read_text()
    relaunched = json.loads((jobs_home / f"resumed-0-{again}.json").read_text())
    assert relaunched["run"] == first_run
    assert relaunched["resume"] == str(jobs_home / "ckpt-0.json")


STOPPABLE = """
import os, time
from pathlib import Path
from forgeml import app
from forgeml.argparse import ArgumentParser

def main(cfg):
    app.on_checkpoint(lambda: Path("stopped.ckpt").absolute())
    Path(f"running-{os.environ['SLURM_JOB_ID']}").write_text("yes")
    while True:
        time.sleep(0.05)

if __name__ == "__main__":
    app.run(main, ArgumentParser().parse_args())
"""


@pytest.mark.slow
def test_stop_is_graceful_cancel_is_not_and_max_restarts_holds(jobs_home: Path) -> None:
    write(jobs_home / "loop.py", STOPPABLE)
    sleeper = jobs.launch(["sleep", "300"], cpus_per_task=1, name="sleeper")
    until(lambda: jobs.status(sleeper)[sleeper.id].state == "RUNNING", 60, "sleep to run")
    result = invoke("jobs", "cancel", sleeper.id)
    assert result.exit_code == 0
    assert jobs.wait(sleeper, timeout=30)[sleeper.id].state == "CANCELLED"

    stopped = jobs.launch([PY, "loop.py"], cpus_per_task=1)
    # loop.py never calls app.checkpoint_requested(): the fallback saves after half the
    # signal budget (1 s here; a stop waits STOP_GRACE_SECONDS).
    limited = jobs.launch(
        [PY, "loop.py"], cpus_per_task=1, requeue=True, max_restarts=0, signal_seconds=2
    )
    for job in (stopped, limited):
        until(
            lambda job=job: (jobs_home / f"running-{job.id}").exists(), 60, f"job {job.id} to start"
        )

    assert invoke("jobs", "stop", stopped.id).exit_code == 0
    jobs.wait(stopped, timeout=30)
    log = stopped.log().read_text()
    assert "asked to stop (SIGTERM)" in log
    assert "checkpoint_requested() was not called" in log  # the fallback saved it
    assert "checkpoint saved" in log
    state = json.loads((stopped.dir / "tasks" / "0.json").read_text())
    assert state["checkpoint"] == str(jobs_home / "stopped.ckpt")

    jobs.signal_requeue(limited.id)
    final = jobs.wait(limited, timeout=30)[limited.id]
    assert "max_restarts 0" in limited.log().read_text()
    assert final.state == "FAILED"  # exit 75: checkpointed, not requeued
    # The job-completion log knows these jobs too (the path without accounting).
    from forgeml.jobs._slurm import jobcomp

    completed = jobcomp([sleeper.id, limited.id])
    assert completed[sleeper.id].state == "CANCELLED"
    assert completed[limited.id].state == "FAILED"


@pytest.mark.slow
def test_secrets_reach_the_job_but_not_its_script(
    jobs_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forgeml.secrets import SecretStore, generate_key

    monkeypatch.setenv("FORGEML_SECRETS_KEY", generate_key())
    monkeypatch.setenv("FORGEML_SECRETS_FILE", str(jobs_home / "secrets.enc"))
    monkeypatch.setenv("FORGEML_HOME", str(jobs_home / "my home"))  # a space: --output copes
    SecretStore().set("DB_PASSWORD", "hunter2-very-secret")
    SecretStore().set("OTHER_TOKEN", "not-for-this-job")
    show = "import os; open('seen', 'w').write(repr([os.environ.get(n) for n in {names!r}]))"
    names = ["DB_PASSWORD", "OTHER_TOKEN"]
    plain = jobs.launch([PY, "-c", show.format(names=names)], cpus_per_task=1)
    assert jobs.wait(plain, timeout=60)[plain.id].state == "COMPLETED", plain.log().read_text()
    assert (jobs_home / "seen").read_text() == "[None, None]"  # no secret unless named
    result = invoke(
        "jobs", "launch", "--secret", "DB_PASSWORD", "--cpus-per-task", "1", "--json", "--",
        PY, "-c", show.format(names=names),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = jobs.Job.from_record(jobs._records.find_record(json.loads(result.output)["id"]))
    assert " " in str(job.dir)
    assert jobs.wait(job, timeout=60)[job.id].state == "COMPLETED", job.log().read_text()
    assert (jobs_home / "seen").read_text() == "['hunter2-very-secret', None]"
    for path in job.dir.rglob("*"):
        if path.is_file():
            assert "hunter2" not in path.read_text(errors="replace"), path


@pytest.mark.slow
def test_log_follow_stops_when_the_task_is_done_or_slurm_forgot_it(
    jobs_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forgeml.cli import jobs as jobs_cli
    from forgeml.jobs._records import write_json

    monkeypatch.setattr(jobs_cli, "LOG_FOLLOW_POLL", 0.01)
    gone = jobs.jobs_dir() / "gone"
    # A launch whose job this cluster never had (its cluster was restarted since).
    write_json(gone / "job.json", {"id": "999999", "submitted": 1.0})
    (gone / "logs").mkdir()
    (gone / "logs" / "999999.out").write_text("old output\n")
    result = invoke("jobs", "log", "-f", "999999")
    assert result.exit_code == 0
    assert "old output" in result.output
    assert "has not listed job 999999 for 20 polls in a row" in result.output
    write_json(gone / "tasks" / "0.json", {"state": "DONE", "exit_code": 0})  # its runner ended
    result = invoke("jobs", "log", "-f", "999999")
    assert result.output == "old output\n"


@pytest.mark.slow
def test_a_refused_submission_leaves_no_record(jobs_home: Path) -> None:
    with pytest.raises(JobsError, match=r"sbatch .* failed: .*[Pp]artition"):
        jobs.launch(["true"], partition="nope")
    assert not any(jobs.jobs_dir().iterdir())
