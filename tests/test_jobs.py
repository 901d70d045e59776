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


def test_launch_without_slurm_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(jobs._slurm.os.path, "exists", lambda p: False)
    with pytest.raises(JobsError, match=r"'sbatch' is not on PATH.*slurm-local"):
        jobs.launch(["true"])


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
        state["step"] += 1
        time.sleep(0.05)

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
    limited = jobs.launch([PY, "loop.py"], cpus_per_task=1, requeue=True, max_restarts=0)
    for job in (stopped, limited):
        until(
            lambda job=job: (jobs_home / f"running-{job.id}").exists(), 60, f"job {job.id} to start"
        )

    assert invoke("jobs", "stop", stopped.id).exit_code == 0
    jobs.wait(stopped, timeout=30)
    log = stopped.log().read_text()
    assert "asked to stop (SIGTERM)" in log
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
    SecretStore().set("DB_PASSWORD", "hunter2-very-secret")
    job = jobs.launch(
        [PY, "-c", "import os; open('seen', 'w').write(os.environ['DB_PASSWORD'])"],
        env={"MLFLOW_TRACKING_URI": "sqlite:///x.db"},
        cpus_per_task=1,
    )
    assert jobs.wait(job, timeout=60)[job.id].state == "COMPLETED"
    assert (jobs_home / "seen").read_text() == "hunter2-very-secret"
    for path in job.dir.rglob("*"):
        if path.is_file():
            assert "hunter2" not in path.read_text(errors="replace"), path
