"""The ``forgeml`` command: lazy subcommands, --version, ``config show``, ``ps`` and ``stop``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest
import yaml
from click.testing import CliRunner, Result

import forgeml
from forgeml._core._files import atomic_write_text
from forgeml.app import DaemonRecord
from forgeml.cli import COMMANDS, cli, main

FORGEML = Path(sys.executable).parent / "forgeml"
FRAMEWORKS = ("torch", "tensorflow", "keras", "sklearn", "xgboost", "onnxruntime", "onnx")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="forgeml")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def imported_after(code: str) -> set[str]:
    """Top-level and forgeml modules imported by ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- the group


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output == f"forgeml, version {forgeml.__version__}\n"
    assert invoke("-V").output == result.output


def test_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Usage: forgeml [OPTIONS] COMMAND [ARGS]..." in result.output
    for name, (_, help_text) in COMMANDS.items():
        assert f"  {name} " in result.output
        assert help_text in result.output
    assert invoke("-h").output == result.output


def test_every_command_loads() -> None:
    for name in COMMANDS:
        result = invoke(name, "--help")
        assert result.exit_code == 0, result.output
        assert f"Usage: forgeml {name}" in result.output


def test_help_and_import_stay_light() -> None:
    modules = imported_after(
        "from forgeml.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0, exc"
    )
    assert "forgeml.cli" in modules
    heavy = {"forgeml.cli.config", "forgeml.cli.daemons", "forgeml.config", "forgeml.app"}
    heavy |= {"yaml", "rich", "numpy", "psutil", "daemon", *FRAMEWORKS}
    assert not heavy & modules


def test_import_forgeml_imports_no_framework() -> None:
    modules = imported_after("import forgeml")
    assert "forgeml" in modules
    assert not set(FRAMEWORKS) & modules


def test_a_command_imports_only_its_module() -> None:
    modules = imported_after(
        "from forgeml.cli import main\n"
        "try:\n    main(['config', '--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0"
    )
    assert "forgeml.cli.config" in modules
    assert "forgeml.cli.daemons" not in modules
    assert not set(FRAMEWORKS) & modules


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["confg"], "No such command 'confg'. Did you mean 'config'?"),
        (["stpo", "x"], "No such command 'stpo'. Did you mean 'stop'?"),
        (["config", "shw", "a.yml"], "No such command 'shw'. Did you mean 'show'?"),
    ],
)
def test_unknown_command_suggests_the_closest(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_unknown_command_without_a_close_match() -> None:
    result = invoke("frobnicate")
    assert result.exit_code == 2
    assert "No such command 'frobnicate'." in result.stderr
    assert "Did you mean" not in result.stderr
    assert "Run 'forgeml --help' for the list." in result.stderr


def test_main_exits_with_the_commands_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"forgeml, version {forgeml.__version__}\n"
    with pytest.raises(SystemExit) as info:
        main(["nope"])
    assert info.value.code == 2
    assert "No such command 'nope'" in capsys.readouterr().err


def test_console_script_and_python_m() -> None:
    for command in ([str(FORGEML)], [sys.executable, "-m", "forgeml"]):
        result = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"forgeml, version {forgeml.__version__}\n"


# --------------------------------------------------------------------------- config show


@pytest.fixture
def app_yml(tmp_path: Path) -> Path:
    write(tmp_path / "data.yml", "path: /data\nbatch: 32\n")
    return write(
        tmp_path / "app.yml",
        """
        model:
          lr: 1e-3
          layers: [64, 32]
        data: !include data.yml
        """,
    )


def test_config_show_yaml_with_includes_and_overrides(app_yml: Path) -> None:
    result = invoke("config", "show", str(app_yml), "model.lr=0.5", "data.batch=64", "tag=x")
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["model"] == {"lr": 0.5, "layers": [64, 32]}
    assert shown["data"] == {"path": "/data", "batch": 64}
    assert shown["tag"] == "x"


def test_config_show_json(app_yml: Path) -> None:
    result = invoke("config", "show", str(app_yml), "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["model"] == {"lr": 0.001, "layers": [64, 32]}
    assert isinstance(shown["model"]["lr"], float)
    assert shown["data"] == {"path": "/data", "batch": 32}


def test_config_show_root_confines_includes(app_yml: Path, tmp_path: Path) -> None:
    write(tmp_path / "outside.yml", "secret: 1\n")
    inner = write(tmp_path / "configs" / "app.yml", "a: !include ../outside.yml\n")
    assert invoke("config", "show", str(inner)).exit_code == 0
    result = invoke("config", "show", str(inner), "--root", str(tmp_path / "configs"))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert str(inner) in result.stderr


@pytest.mark.parametrize(
    ("name", "text", "args", "message"),
    [
        ("bad.yml", "a: [1, 2\n", [], "invalid YAML"),
        ("evil.yml", "a: !!python/object/apply:os.system [echo hi]\n", [], "unsafe"),
        ("inc.yml", "a: !include missing.yml\n", [], "included file 'missing.yml' not found"),
        ("list.yml", "- 1\n- 2\n", [], "mapping at the top level"),
        ("ok.yml", "a: 1\n", ["a.b"], "Override 'a.b' must look like 'key=value'"),
    ],
)
def test_config_show_errors_name_the_file(
    tmp_path: Path, name: str, text: str, args: list[str], message: str
) -> None:
    path = write(tmp_path / name, text)
    result = invoke("config", "show", str(path), *args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert message in result.stderr
    if not args:
        assert name in result.stderr
    assert "Traceback" not in result.output


def test_config_show_missing_file(tmp_path: Path) -> None:
    result = invoke("config", "show", str(tmp_path / "nope.yml"))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Config file ")
    assert "nope.yml" in result.stderr


def test_config_show_error_through_the_console_script(tmp_path: Path) -> None:
    write(tmp_path / "bad.yml", "a: [1, 2\n")
    result = subprocess.run(
        [str(FORGEML), "config", "show", "bad.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"Error: {tmp_path / 'bad.yml'}, line 2")
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- ps and stop


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "run"


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started by a test; killed and reaped afterwards."""
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def start_daemon(
    children: list[subprocess.Popen[str]], run_dir: Path, name: str, *, ignore_term: bool = False
) -> DaemonRecord:
    """A sleeping process with the records that ``app.run -d`` writes for a daemon."""
    code = "import signal, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    children.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    record = DaemonRecord(
        pid=proc.pid,
        name=name,
        argv=[f"{name}.py", "-d"],
        cwd=str(run_dir.parent),
        logfile=str(run_dir.parent / f"{name}-{proc.pid}.log"),
        pidfile=str(run_dir / f"{name}-{proc.pid}.pid"),
        started=time.time() - 3725,
        create_time=psutil.Process(proc.pid).create_time(),
    )
    atomic_write_text(record.pidfile, f"{proc.pid}\n")
    atomic_write_text(record.record_file, json.dumps(asdict(record)))
    return record


def stopped(record: DaemonRecord) -> bool:
    return not record.alive() and not Path(record.pidfile).exists()


def test_ps_without_daemons(run_dir: Path) -> None:
    result = invoke("ps")
    assert result.exit_code == 0
    assert result.output == "No forgeml daemons are running.\n"
    result = invoke("ps", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output) == []


def test_ps_lists_daemons(run_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    train = start_daemon(children, run_dir, "train")
    serve = start_daemon(children, run_dir, "serve")
    result = invoke("ps", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output) == [asdict(train), asdict(serve)]
    result = invoke("ps")
    assert result.exit_code == 0
    header, *rows = result.output.splitlines()
    assert header.split() == ["PID", "NAME", "UPTIME", "CWD", "LOG"]
    # Piped output keeps one line per daemon with whole paths, however long.
    assert rows[0].split() == [str(train.pid), "train", "1:02:05", train.cwd, train.logfile]
    assert rows[1].split() == [str(serve.pid), "serve", "1:02:05", serve.cwd, serve.logfile]


def test_stop_by_name_and_by_pid(run_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    first = start_daemon(children, run_dir, "train")
    second = start_daemon(children, run_dir, "train")
    other = start_daemon(children, run_dir, "serve")
    result = invoke("stop", "train")
    assert result.exit_code == 0, result.output
    assert result.output == f"stopped {first.pid} (train)\nstopped {second.pid} (train)\n"
    assert stopped(first)
    assert stopped(second)
    assert other.alive()
    result = invoke("stop", str(other.pid))
    assert result.exit_code == 0, result.output
    assert result.output == f"stopped {other.pid} (serve)\n"
    assert stopped(other)
    assert list(run_dir.iterdir()) == []


def test_stop_unknown_target(run_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    result = invoke("stop", "ghost")
    assert result.exit_code == 1
    assert result.stderr == "Error: No running forgeml daemon matches 'ghost'. Running: none.\n"
    record = start_daemon(children, run_dir, "train")
    result = invoke("stop", "99999999")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: No running forgeml daemon matches '99999999'. Running: {record.pid} (train).\n"
    )
    assert record.alive()
    result = invoke("stop")
    assert result.exit_code == 2
    assert "Missing argument 'PID|NAME...'" in result.stderr


def test_stop_timeout_then_force(run_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    record = start_daemon(children, run_dir, "stubborn", ignore_term=True)
    result = invoke("stop", "stubborn", "--timeout", "0.2")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: Daemon(s) {record.pid} still running 0.2 s after SIGTERM. "
        f"Use 'forgeml stop --force {record.pid}' to SIGKILL them.\n"
    )
    assert record.alive()
    result = invoke("stop", "--force", "--timeout", "0.2", str(record.pid))
    assert result.exit_code == 0, result.output
    assert stopped(record)
