"""The launcher ``forgeml.app.run``: seeding, GPU visibility, logging, daemons, distributed runs.

In-process tests cover ``app.run``'s contract; each behaviour that changes the
process (seeding frameworks, environment, detaching, worker processes) is run
for real in a script under ``tmp_path`` with ``sys.executable``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from forgeml import app
from forgeml._core import _lazy
from forgeml._core._files import atomic_write_text
from forgeml._core._net import free_port
from forgeml.app import AppError, DaemonRecord
from forgeml.config import Config

FORGEML = Path(sys.executable).parent / "forgeml"
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ +\S+ \[pid \d+( rank \d+)?\]: "
)
# Variables from the calling environment that would change what the scripts see.
_FOREIGN_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "PYTHONHASHSEED",
)


# --------------------------------------------------------------------------- helpers


def script_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env["FORGEML_HOME"] = str(tmp_path / "home")
    env.update(extra)
    return env


def write_script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


def run_script(
    script: Path, *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in its directory, in a new process group that is killed afterwards.

    Workers started by the script share its process group, so none outlives the test.
    """
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=script.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill_processes_running(path: Path) -> None:
    """Kill every process whose command line mentions ``path`` (daemons left by a test)."""
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(str(path) in part for part in proc.info["cmdline"] or ()):
                proc.kill()


@pytest.fixture
def leftovers(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``; afterwards, processes still running a script from it are killed."""
    try:
        yield tmp_path
    finally:
        kill_processes_running(tmp_path)


@pytest.fixture
def in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run ``app.run`` in the test process and undo what it changes process-wide."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = {name: dict(callbacks) for name, callbacks in _lazy._hooks.items()}
    random_state, np_state = random.getstate(), np.random.get_state()
    for name in _FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "prog.py")])
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ)
    try:
        yield tmp_path
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
        logging.captureWarnings(False)
        with _lazy._lock:
            _lazy._hooks.clear()
            _lazy._hooks.update(hooks)
        random.setstate(random_state)
        np.random.set_state(np_state)
        # app.run sets PYTHONHASHSEED and CUDA_VISIBLE_DEVICES directly.
        for name in set(os.environ) - set(env):
            del os.environ[name]
        os.environ.update(env)


# --------------------------------------------------------------------------- app.run in process


def test_run_fills_builtin_defaults_and_returns_main_value(in_process: Path) -> None:
    seen: dict[str, Any] = {}

    def main(cfg: Config, factor: int, *, offset: int = 0) -> int:
        seen["cfg"] = cfg
        return int(cfg.model.width) * factor + offset

    assert app.run(main, {"model": {"width": 4}, "seed": 7}, 3, offset=1) == 13
    cfg = seen["cfg"]
    assert isinstance(cfg, Config)
    assert cfg.model.width == 4
    assert cfg.seed == 7
    defaults = app.run_defaults()
    for key in ("deterministic", "gpu", "no_gpu", "logging", "logfile", "daemon", "dist"):
        assert cfg[key] == defaults[key], key
    assert cfg.gpu == []
    assert cfg.daemon is False
    assert cfg.dist is None
    assert not list(in_process.glob("*.log")), "no log file without -L"


def test_run_with_a_config_object_keeps_its_values(in_process: Path) -> None:
    cfg = app.run_defaults().merge({"seed": 11, "lr": 0.5})
    assert app.run(lambda c: (c.seed, c.lr, c.world_size), cfg) == (11, 0.5, -1)


def test_run_without_cfg_parses_the_command_line(
    in_process: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def train(*, lr: float = 0.1, epochs: int = 1, seed: int = 0) -> tuple[float, int, int]:
        return lr, epochs, seed

    monkeypatch.setattr(sys, "argv", ["train.py", "--lr", "0.5", "--seed", "3"])
    assert app.run(train) == (0.5, 1, 3)


def test_run_seeds_random_and_numpy(in_process: Path) -> None:
    def draw(cfg: Config) -> tuple[float, float]:
        return random.random(), float(np.random.rand())

    first = app.run(draw, {"seed": 5})
    assert app.run(draw, {"seed": 5}) == first
    assert first == (random.Random(5).random(), float(np.random.RandomState(5).rand()))
    assert app.run(draw, {"seed": 6}) != first
    assert os.environ["PYTHONHASHSEED"] == "6"


def test_seed_everything_rejects_bad_seeds(in_process: Path) -> None:
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(AppError, match=r"seed must be a non-negative integer\. Got"):
            app.seed_everything(bad)  # type: ignore[arg-type]
    with pytest.raises(SystemExit) as info:
        app.run(lambda cfg: None, {"seed": -4})
    assert info.value.code == 1


def test_keyboard_interrupt_exits_130(in_process: Path) -> None:
    def main(cfg: Config) -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as info:
        app.run(main, {})
    assert info.value.code == 130


def test_exception_in_main_is_logged_and_exits_1(
    in_process: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def main(cfg: Config) -> None:
        raise ValueError("bad batch")

    with pytest.raises(SystemExit) as info:
        app.run(main, {})
    assert info.value.code == 1
    assert isinstance(info.value.__cause__, ValueError)
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "failed: bad batch" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError


@pytest.mark.parametrize(
    ("dist", "message"),
    [("mpi", "Got 'mpi'"), ("ray", "--dist must be 'torch' or 'slurm'")],
)
def test_unsupported_dist_exits_1_with_a_message(
    in_process: Path, caplog: pytest.LogCaptureFixture, dist: str, message: str
) -> None:
    called = []
    with pytest.raises(SystemExit) as info:
        app.run(called.append, {"dist": dist})
    assert info.value.code == 1
    assert not called
    assert message in caplog.text


@pytest.mark.parametrize(
    ("cfg", "before", "after"),
    [
        ({"gpu": [0, 2]}, None, "0,2"),
        ({"gpu": [1]}, "0,1,2", "1"),
        ({"no_gpu": True}, "0", ""),
        ({"no_gpu": True, "gpu": []}, None, ""),
        ({"gpu": []}, "3", "3"),
        ({}, None, None),
    ],
)
def test_apply_gpu_visibility(
    monkeypatch: pytest.MonkeyPatch, cfg: dict[str, Any], before: str | None, after: str | None
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "restored afterwards")
    if before is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", before)
    app.apply_gpu_visibility(cfg)
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == after


def test_log_file_names(in_process: Path) -> None:
    sys.argv[0] = "/somewhere/train.py"
    pid = os.getpid()
    assert app.setup_logging(Config(logging=False)) is None
    assert app.setup_logging(Config(logging=True)) == in_process / f"train-{pid}.log"
    assert app.setup_logging(Config(logging=True), rank=2) == in_process / f"train-{pid}-rank2.log"
    given = in_process / "logs" / "run.log"
    assert app.setup_logging(Config(logfile=str(given)), rank=0) == given
    assert app.setup_logging(Config(logfile=str(given)), rank=3) == given.with_name("run-rank3.log")
    logging.getLogger("forgeml.test").info("hello file")
    text = given.with_name("run-rank3.log").read_text(encoding="utf-8")
    assert LOG_LINE.match(text)
    assert f"[pid {pid} rank 3]: hello file" in text
    # Earlier handlers were replaced: one forgeml file handler is left.
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_forgeml_handler", False)]
    assert [type(h) for h in ours] == [logging.FileHandler]


# --------------------------------------------------------------------------- daemon records


def _sleeper(ignore_term: bool = False) -> subprocess.Popen[str]:
    code = "import signal, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


def register(proc: subprocess.Popen[str], name: str, run_dir: Path) -> DaemonRecord:
    """Write the records ``app.run -d`` writes, for a process we started ourselves."""
    record = DaemonRecord(
        pid=proc.pid,
        name=name,
        argv=[f"{name}.py", "-d"],
        cwd=str(run_dir.parent),
        logfile=str(run_dir.parent / f"{name}-{proc.pid}.log"),
        pidfile=str(run_dir / f"{name}-{proc.pid}.pid"),
        started=time.time(),
        create_time=psutil.Process(proc.pid).create_time(),
    )
    atomic_write_text(record.pidfile, f"{proc.pid}\n")
    atomic_write_text(record.record_file, json.dumps(asdict(record)))
    return record


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "run"


def test_list_daemons_prunes_stale_records(run_dir: Path) -> None:
    assert app.list_daemons() == []
    proc = _sleeper()
    try:
        live = register(proc, "live", run_dir)
        dead_proc = _sleeper()
        dead = register(dead_proc, "dead", run_dir)
        dead_proc.kill()
        dead_proc.wait()
        (run_dir / "garbage.json").write_text("{not json", encoding="utf-8")
        assert [r.pid for r in app.list_daemons(prune=False)] == [live.pid]
        assert dead.record_file.exists()
        assert [r.name for r in app.list_daemons()] == ["live"]
        assert not dead.record_file.exists()
        assert not Path(dead.pidfile).exists()
        assert [r.pid for r in app.find_daemons("live")] == [live.pid]
        assert [r.name for r in app.find_daemons(str(live.pid))] == ["live"]
        assert app.find_daemons("dead") == []
        # A record whose pid was reused by another process is not alive.
        live.create_time -= 100
        assert not live.alive()
    finally:
        proc.kill()
        proc.wait()


def test_stop_daemon_counts_a_zombie_as_stopped(run_dir: Path) -> None:
    # Nobody reaps our child until we wait(): it stays a zombie, as a daemon would
    # where no init process reaps orphans. Stopping must not wait for the reaper.
    proc = _sleeper()
    try:
        record = register(proc, "worker", run_dir)
        start = time.monotonic()
        assert app.stop_daemon(record, timeout=10)
        assert time.monotonic() - start < 5
        assert psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
        assert not record.record_file.exists()
        assert not Path(record.pidfile).exists()
        assert app.stop_daemon(record)  # already stopped
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGTERM


def test_stop_daemon_force_kills_after_the_timeout(run_dir: Path) -> None:
    proc = _sleeper(ignore_term=True)
    try:
        record = register(proc, "stubborn", run_dir)
        assert not app.stop_daemon(record, timeout=0.3)
        assert record.alive()
        assert record.record_file.exists()
        assert app.stop_daemon(record, timeout=0.3, force=True)
        assert not record.alive()
        assert not record.record_file.exists()
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


# --------------------------------------------------------------------------- real runs

TRAIN = """
import hashlib, json, random, sys

import numpy as np

if "--torch-first" in sys.argv:
    import torch  # imported before app.run: seeded right away
    sys.argv.remove("--torch-first")

from forgeml import app
from forgeml.argparse import ArgumentParser


def main(cfg):
    import torch  # imported after app.run started: seeded on import

    x = torch.randn(64, 8)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(64, 1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(4):
        order = np.random.permutation(64)
        for start in range(0, 64, 16):
            batch = sorted(order[start:start + 16].tolist(), key=lambda _: random.random())
            loss = torch.nn.functional.mse_loss(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    weights = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    return {
        "sha256": hashlib.sha256(weights).hexdigest(),
        "loss": loss.item(),
        "initial_seed": torch.initial_seed(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


if __name__ == "__main__":
    print(json.dumps(app.run(main, ArgumentParser().parse_args())))
"""


@pytest.mark.slow
def test_same_seed_gives_bit_identical_training(leftovers: Path) -> None:
    script = write_script(leftovers, "train.py", TRAIN)
    env = script_env(leftovers)
    runs = {
        "a": ["--seed", "5", "--deterministic"],
        "b": ["--seed", "5", "--deterministic", "--torch-first"],
        "c": ["--seed", "6"],
    }
    procs = {
        key: subprocess.Popen(
            [sys.executable, str(script), *args],
            cwd=leftovers,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, args in runs.items()
    }
    results = {}
    try:
        for key, proc in procs.items():
            out, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, err
            results[key] = json.loads(out.strip().splitlines()[-1])
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    a, b, c = results["a"], results["b"], results["c"]
    assert a["initial_seed"] == b["initial_seed"] == 5
    assert c["initial_seed"] == 6
    assert a["deterministic"] is b["deterministic"] is True
    assert c["deterministic"] is False
    assert a["sha256"] == b["sha256"]
    assert a["loss"] == b["loss"]
    assert c["sha256"] != a["sha256"]
    assert c["loss"] != a["loss"]


ENV_PROBE = """
import json, os, sys

from forgeml import app
from forgeml.argparse import ArgumentParser


def main(cfg):
    frameworks = [m for m in ("torch", "tensorflow") if m in sys.modules]
    print(json.dumps({"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "frameworks": frameworks}))


if __name__ == "__main__":
    app.run(main, ArgumentParser().parse_args())
"""


@pytest.mark.parametrize(
    ("args", "inherited", "visible"),
    [
        (["--gpu", "0", "2"], None, "0,2"),
        (["--gpu", "1"], "0,1", "1"),
        (["--no-gpu"], "0,1", ""),
        ([], "3", "3"),
        ([], None, None),
    ],
)
def test_gpu_visibility_is_set_before_main(
    leftovers: Path, args: list[str], inherited: str | None, visible: str | None
) -> None:
    script = write_script(leftovers, "probe.py", ENV_PROBE)
    env = script_env(leftovers)
    if inherited is not None:
        env["CUDA_VISIBLE_DEVICES"] = inherited
    result = run_script(script, *args, env=env)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {"visible": visible, "frameworks": []}


def test_gpu_and_no_gpu_are_exclusive(leftovers: Path) -> None:
    script = write_script(leftovers, "probe.py", ENV_PROBE)
    result = run_script(script, "--gpu", "0", "--no-gpu", env=script_env(leftovers))
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr


FAIL = """
import logging, os

from forgeml import app
from forgeml.argparse import ArgumentParser


def main(cfg):
    print("pid", os.getpid(), flush=True)
    logging.getLogger("fail").info("about to fail")
    raise ValueError("boom in main")


if __name__ == "__main__":
    app.run(main, ArgumentParser().parse_args())
"""


def test_logging_to_file_and_console_with_uncaught_exception(leftovers: Path) -> None:
    script = write_script(leftovers, "fail.py", FAIL)
    result = run_script(script, "-L", env=script_env(leftovers))
    assert result.returncode == 1
    pid = int(result.stdout.split()[1])
    line = (
        textwrap.dedent(FAIL)
        .lstrip("\n")
        .splitlines()
        .index('    raise ValueError("boom in main")')
    )
    (logfile,) = leftovers.glob("*.log")
    assert logfile.name == f"fail-{pid}.log"
    text = logfile.read_text(encoding="utf-8")
    for output in (text, result.stderr):
        assert f"[pid {pid}]: about to fail" in output
        assert f"[pid {pid}]: main failed: boom in main" in output
        assert "Traceback (most recent call last):" in output
        assert f'fail.py", line {line + 1}, in main' in output
        assert output.rstrip().endswith("ValueError: boom in main")
    # One format: the file holds exactly the log lines the console shows.
    file_lines = [line for line in text.splitlines() if LOG_LINE.match(line)]
    console_lines = [line for line in result.stderr.splitlines() if LOG_LINE.match(line)]
    assert file_lines == console_lines
    assert len(file_lines) == 3  # "logging to ...", "about to fail", "main failed"


def test_logfile_option_and_no_file_without_it(leftovers: Path) -> None:
    script = write_script(leftovers, "fail.py", FAIL)
    env = script_env(leftovers)
    result = run_script(script, env=env)
    assert result.returncode == 1
    assert "ValueError: boom in main" in result.stderr
    assert not list(leftovers.glob("*.log"))

    result = run_script(script, "--logfile", "logs/run.log", env=env)
    assert result.returncode == 1
    text = (leftovers / "logs" / "run.log").read_text(encoding="utf-8")
    assert "about to fail" in text
    assert "ValueError: boom in main" in text
    assert not list(leftovers.glob("*.log"))


SLEEPER = """
import logging, os, time

from forgeml import app
from forgeml.argparse import ArgumentParser


def main(cfg):
    print(f"printed by main in {os.getcwd()}", flush=True)
    logging.getLogger("main").info("logged by main, pid %d", os.getpid())
    time.sleep(60)


if __name__ == "__main__":
    app.run(main, ArgumentParser().parse_args())
"""


def forgeml_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FORGEML), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def wait_for_daemons(names: set[str], env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        result = forgeml_cli("ps", "--json", env=env, cwd=cwd)
        assert result.returncode == 0, result.stderr
        records: list[dict[str, Any]] = json.loads(result.stdout)
        if {r["name"] for r in records} >= names or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def wait_for_text(path: Path, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text(encoding="utf-8") if path.exists() else ""
        if text in content or time.monotonic() > deadline:
            return content
        time.sleep(0.1)


@pytest.mark.slow
def test_daemon_ps_and_stop(leftovers: Path) -> None:
    write_script(leftovers, "sleeper.py", SLEEPER)
    write_script(leftovers, "napper.py", SLEEPER)
    env = script_env(leftovers)
    run_dir = leftovers / "home" / "run"
    for name in ("sleeper", "napper"):
        start = time.monotonic()
        result = run_script(leftovers / f"{name}.py", "-d", env=env)
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - start < 20, "the launching process returns at once"
        assert f"starting '{name}' as a daemon in {leftovers}" in result.stderr

    records = {r["name"]: r for r in wait_for_daemons({"sleeper", "napper"}, env, leftovers)}
    assert set(records) == {"sleeper", "napper"}
    sleeper, napper = records["sleeper"], records["napper"]
    for record in (sleeper, napper):
        pid = record["pid"]
        assert psutil.pid_exists(pid)
        assert record["cwd"] == str(leftovers)
        assert record["argv"][-1] == "-d"
        pidfile = run_dir / f"{record['name']}-{pid}.pid"
        assert record["pidfile"] == str(pidfile)
        assert pidfile.read_text(encoding="utf-8").strip() == str(pid)
        logfile = leftovers / f"{record['name']}-{pid}.log"
        assert record["logfile"] == str(logfile)
        text = wait_for_text(logfile, f"logged by main, pid {pid}")
        assert f"printed by main in {leftovers}" in text, "working directory kept"
        assert re.search(rf"INFO +main \[pid {pid}\]: logged by main, pid {pid}", text)

    table = forgeml_cli("ps", env=env, cwd=leftovers)
    assert table.returncode == 0
    assert str(sleeper["pid"]) in table.stdout
    assert "napper" in table.stdout

    stopped = forgeml_cli("stop", "sleeper", env=env, cwd=leftovers)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"stopped {sleeper['pid']} (sleeper)"
    assert not psutil.pid_exists(sleeper["pid"]) or (
        psutil.Process(sleeper["pid"]).status() == psutil.STATUS_ZOMBIE
    )
    assert not (run_dir / f"sleeper-{sleeper['pid']}.pid").exists()
    assert not (run_dir / f"sleeper-{sleeper['pid']}.json").exists()
    assert [
        r["name"] for r in json.loads(forgeml_cli("ps", "--json", env=env, cwd=leftovers).stdout)
    ] == ["napper"]

    unknown = forgeml_cli("stop", "sleeper", env=env, cwd=leftovers)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        f"Error: No running forgeml daemon matches 'sleeper'. Running: {napper['pid']} (napper)."
    )

    stopped = forgeml_cli("stop", str(napper["pid"]), env=env, cwd=leftovers)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"stopped {napper['pid']} (napper)"
    assert forgeml_cli("ps", "--json", env=env, cwd=leftovers).stdout.strip() == "[]"
    assert list(run_dir.iterdir()) == []
    assert "printed by main" in (leftovers / f"napper-{napper['pid']}.log").read_text("utf-8")


DIST = """
import json, os, sys, time

from forgeml import app
from forgeml.argparse import ArgumentParser

ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")


def main(cfg):
    import torch
    import torch.distributed as dist

    value = torch.tensor([float(cfg.rank + 1)])
    dist.all_reduce(value)
    seen = {
        "rank": cfg.rank,
        "local_rank": cfg.local_rank,
        "world_size": cfg.world_size,
        "backend": dist.get_backend(),
        "result": value.item(),
        "env": {name: os.environ.get(name) for name in ENV},
    }
    # One write per line: the workers share the launcher's stdout pipe.
    os.write(1, (json.dumps(seen) + "\\n").encode())
    if cfg.fail:
        if cfg.rank == 1:
            raise RuntimeError("worker one exploded")
        time.sleep(60)


if __name__ == "__main__":
    parser = ArgumentParser()
    parser.add_argument("--fail", action="store_true")
    app.run(main, parser.parse_args())
"""


@pytest.mark.slow
def test_dist_torch_two_gloo_workers_all_reduce(leftovers: Path) -> None:
    script = write_script(leftovers, "dist.py", DIST)
    port = free_port()
    args = ["--dist", "torch", "--world-size", "2", "--dist-port", str(port), "-L"]
    result = run_script(script, *args, env=script_env(leftovers), timeout=90)
    assert result.returncode == 0, result.stderr
    lines = sorted(
        (json.loads(line) for line in result.stdout.splitlines()), key=lambda r: r["rank"]
    )
    assert [r["rank"] for r in lines] == [0, 1]
    for rank, seen in enumerate(lines):
        assert seen["result"] == 3.0
        assert seen["backend"] == "gloo"
        assert seen["world_size"] == 2
        assert seen["local_rank"] == rank
        assert seen["env"] == {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
        }
    assert "starting 2 workers (backend gloo" in result.stderr
    names = sorted(p.name for p in leftovers.glob("*.log"))
    assert len(names) == 3
    assert re.fullmatch(r"dist-\d+\.log", names[0])
    assert re.fullmatch(r"dist-\d+-rank0\.log", names[1])
    assert re.fullmatch(r"dist-\d+-rank1\.log", names[2])


@pytest.mark.slow
def test_dist_failing_worker_stops_the_others(leftovers: Path) -> None:
    script = write_script(leftovers, "dist.py", DIST)
    args = ["--dist", "torch", "--world-size", "2", "--dist-port", str(free_port()), "--fail"]
    start = time.monotonic()
    result = run_script(script, *args, env=script_env(leftovers), timeout=90)
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stderr
    assert elapsed < 40, f"the launcher waited {elapsed:.0f} s for the sleeping worker"
    assert "Distributed worker 1 of 2 failed; the others were stopped." in result.stderr
    assert "Traceback (most recent call last):" in result.stderr
    line = (
        textwrap.dedent(DIST)
        .lstrip("\n")
        .splitlines()
        .index('            raise RuntimeError("worker one exploded")')
    )
    assert f'dist.py", line {line + 1}, in main' in result.stderr
    assert "RuntimeError: worker one exploded" in result.stderr
    assert len(result.stdout.splitlines()) == 2  # both workers got as far as the all-reduce


def test_dist_torch_without_world_size_on_cpu(leftovers: Path) -> None:
    script = write_script(leftovers, "dist.py", DIST)
    result = run_script(
        script, "--dist", "torch", env=script_env(leftovers, CUDA_VISIBLE_DEVICES="")
    )
    assert result.returncode == 1
    assert "--dist torch needs --world-size N on a machine without GPUs" in result.stderr
    assert "Example: --dist torch --world-size 2." in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# ----------------------------------------------------------------------------- Slurm (jobs issue)


@pytest.fixture
def job_task(in_process: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``app.run`` as a task of a forgeml job: its state file; signal handlers and checkpoint
    hooks are restored afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM, signal.SIGALRM)}
    state = in_process / "task.json"
    monkeypatch.setenv("FORGEML_JOB_STATE", str(state))
    monkeypatch.delenv("FORGEML_RESUME", raising=False)
    app.clear_checkpoint_hooks()
    try:
        yield state
    finally:
        app.clear_checkpoint_hooks()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_dist_slurm_outside_an_allocation_submits_and_says_what_is_missing(
    in_process: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(in_process))  # no sbatch here
    monkeypatch.setattr("forgeml.jobs._slurm.FALLBACK_DIRS", ())
    called = []
    with pytest.raises(SystemExit) as info:
        app.run(called.append, {"dist": "slurm", "slurm_partition": "debug"})
    assert info.value.code == 1
    assert not called
    assert "The Slurm command 'sbatch' is not on PATH" in caplog.text
    assert "scripts/slurm-local" in caplog.text
    assert not list((in_process / "home" / "jobs").glob("*"))  # nothing submitted, no record
    from forgeml.jobs import render_script, sbatch_options

    options = sbatch_options(name="prog", partition="debug", mem="32G", cpus_per_task=4)
    script = render_script(options, in_process, [sys.executable, "prog.py"], "test")
    assert "#SBATCH --partition=debug" in script
    assert "#SBATCH --mem=32G" in script
    assert "#SBATCH --cpus-per-task=4" in script
    assert "forgeml.jobs._task" in script


def test_slurm_task_env_maps_onto_torch_distributed(
    in_process: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forgeml.jobs import slurm_worker_env

    monkeypatch.setenv("PATH", str(in_process))  # scontrol missing: parsed here
    monkeypatch.setattr("forgeml.jobs._slurm.FALLBACK_DIRS", ())
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    values = slurm_worker_env(Config({"dist_port": None}))  # not given: derived from the job
    assert values == {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(20000 + 1234),
    }
    assert os.environ["RANK"] == "5"
    assert slurm_worker_env(Config({"dist_port": 29500}))["MASTER_PORT"] == "29500"
    # The launcher's default port counts as not chosen (two jobs on a node would share it).
    assert slurm_worker_env(Config({"dist_port": 25900}))["MASTER_PORT"] == str(20000 + 1234)


@pytest.mark.gpu
def test_slurm_task_pins_its_gpu_per_local_rank(
    in_process: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forgeml._core._env import nvidia_gpu_count
    from forgeml.jobs import slurm_worker_env

    if nvidia_gpu_count() < 1:
        pytest.skip("needs an NVIDIA GPU")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "localhost")
    assert slurm_worker_env(Config({}))["CUDA_VISIBLE_DEVICES"] == "0"


def test_a_job_task_gets_cfg_resume_and_checkpoints_on_the_requeue_signal(
    job_task: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGEML_JOB_REQUEUE", "1")
    seen: list[Any] = []

    def main(cfg: Config) -> None:
        seen.append(cfg.resume)
        app.on_checkpoint(lambda: None)  # a hook may save nothing
        app.on_checkpoint(lambda: job_task.parent / "last.ckpt")
        os.kill(os.getpid(), signal.SIGUSR1)  # Slurm's warning before the time limit
        seen.append("signalled")  # the handler only took note
        app.checkpoint_requested()  # a step boundary: the hooks run here
        seen.append("not interrupted")

    with pytest.raises(SystemExit) as info:
        app.run(main, {})
    assert info.value.code == 75  # checkpointed: the task runner requeues the job
    assert seen == [None, "signalled"]
    state = json.loads(job_task.read_text())
    assert state["checkpoint"] == str(job_task.parent / "last.ckpt")

    monkeypatch.setenv("FORGEML_RESUME", state["checkpoint"])
    app.clear_checkpoint_hooks()
    app.run(lambda cfg: seen.append(cfg.resume), {})
    assert seen[-1] == str(job_task.parent / "last.ckpt")


def test_a_job_task_saves_and_stops_on_sigterm(
    job_task: Path, caplog: pytest.LogCaptureFixture
) -> None:
    saved = []

    def main(cfg: Config) -> None:
        app.on_checkpoint(lambda: saved.append(1) or job_task.parent / "stop.ckpt")
        os.kill(os.getpid(), signal.SIGTERM)  # forgeml jobs stop
        assert saved == []  # the handler only took note
        app.checkpoint_requested()

    with pytest.raises(SystemExit) as info:
        app.run(main, {})
    assert info.value.code == 130
    assert saved == [1]
    assert "asked to stop (SIGTERM)" in caplog.text
    assert json.loads(job_task.read_text())["checkpoint"] == str(job_task.parent / "stop.ckpt")


def test_on_checkpoint_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="needs a callable"):
        app.on_checkpoint("save")  # type: ignore[type-var]
