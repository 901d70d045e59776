"""forgeml.argparse: built-in run options, config precedence, options from function signatures."""

from __future__ import annotations

import argparse
import enum
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal, Optional

import pytest

from forgeml._core._env import nvidia_gpu_count
from forgeml.argparse import ArgumentError, ArgumentParser, call_with_config, parser_for
from forgeml.config import Config

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"

BUILTIN_DEFAULTS = {
    "cfg": None,
    "daemon": False,
    "logging": False,
    "logfile": None,
    "seed": 1204,
    "deterministic": False,
    "gpu": [],
    "no_gpu": False,
    "dist": None,
    "dist_backend": "nccl" if nvidia_gpu_count() > 0 else "gloo",
    "dist_url": "env://",
    "dist_port": 25900,
    "dist_no_sync_bn": False,
    "world_size": -1,
    "rank": -1,
    "slurm_partition": "gpu",
    "slurm_nodelist": None,
    "slurm_nodes": 1,
    "slurm_ntasks_per_node": 1,
    "slurm_cpus_per_task": 4,
    "slurm_constraint": None,
    "slurm_mem": "32G",
    "slurm_time": "0",
    "slurm_export": "",
}
SITE = {"name": "site1", "location": "Santa Clara, CA", "note": "Welcome to CA", "template": "XXX"}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def fails(parser: argparse.ArgumentParser, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Parse ``argv`` expecting an argparse error: exit code 2, message on stderr."""
    with pytest.raises(SystemExit) as info:
        parser.parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert "Traceback" not in err
    return err


def run_program(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def printed_config(stdout: str) -> Config:
    """The ``Config(...)`` that the quickstart program printed, read back with only Config."""
    prefix = "Running main() with cfg="
    line = next(line for line in stdout.splitlines() if line.startswith(prefix))
    cfg = eval(line.removeprefix(prefix), {"__builtins__": {}}, {"Config": Config})
    assert type(cfg) is Config
    return cfg


def check_quickstart(cfg: Config) -> None:
    assert {k: cfg[k] for k in BUILTIN_DEFAULTS} == {**BUILTIN_DEFAULTS, "cfg": ["configs/app.yml"]}
    assert cfg.app_site == SITE
    assert type(cfg.app_site) is Config
    assert (cfg.app_platform, cfg.app_OS) == ("Apple M1", "MacOSX")


# --- the quickstart program ------------------------------------------------------------------


def test_quickstart_prints_the_resolved_config() -> None:
    proc = run_program([sys.executable, "program.py", "--cfg", "configs/app.yml"], QUICKSTART)
    assert proc.returncode == 0, proc.stderr
    check_quickstart(printed_config(proc.stdout))


def test_quickstart_runs_as_an_executable_script(tmp_path: Path) -> None:
    shutil.copytree(QUICKSTART / "configs", tmp_path / "configs")
    source = (QUICKSTART / "program.py").read_text(encoding="utf-8")
    body = source.split("\n", 1)[1] if source.startswith("#!") else source
    program = tmp_path / "program.py"
    program.write_text(f"#!{sys.executable}\n{body}", encoding="utf-8")
    program.chmod(0o755)
    proc = run_program(["./program.py", "--cfg", "configs/app.yml"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    check_quickstart(printed_config(proc.stdout))


# --- built-in options ------------------------------------------------------------------------


def test_parse_args_returns_a_config_with_every_builtin_default() -> None:
    parser = ArgumentParser()
    assert isinstance(parser, argparse.ArgumentParser)
    cfg = parser.parse_args([])
    assert type(cfg) is Config
    assert cfg == BUILTIN_DEFAULTS
    assert list(cfg) == list(BUILTIN_DEFAULTS)


def test_defaults_returns_every_builtin_default() -> None:
    parser = ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    defaults = parser.defaults()
    assert type(defaults) is Config
    assert defaults == {**BUILTIN_DEFAULTS, "lr": 0.1}
    assert ArgumentParser(run_options=False).defaults() == {}


@pytest.mark.parametrize(
    "changed",
    [
        {"daemon": True, "logging": True, "logfile": "run.log", "deterministic": True},
        {"seed": 7, "gpu": [0, 2]},
        {"no_gpu": True, "dist": "torch", "dist_backend": "gloo"},
        {"dist": "slurm", "dist_backend": "nccl", "dist_url": "tcp://127.0.0.1:1"},
        {"dist_port": 1234, "dist_no_sync_bn": True, "world_size": 4, "rank": 2},
        {"slurm_partition": "cpu", "slurm_nodelist": "n[1-2]", "slurm_nodes": 2},
        {"slurm_ntasks_per_node": 8, "slurm_cpus_per_task": 16, "slurm_constraint": "a100"},
        {"slurm_mem": "8G", "slurm_time": "1:00:00", "slurm_export": "ALL"},
    ],
)
def test_each_builtin_long_option(changed: dict[str, object]) -> None:
    argv = []
    for key, value in changed.items():
        if key == "dist_backend" and changed.get("no_gpu"):
            continue  # --no-gpu alone makes the backend gloo
        values = value if isinstance(value, list) else [] if value is True else [value]
        argv += [f"--{key.replace('_', '-')}", *map(str, values)]
    assert ArgumentParser().parse_args(argv) == {**BUILTIN_DEFAULTS, **changed}


def test_short_options() -> None:
    cfg = ArgumentParser().parse_args(["-d", "-L", "-s", "5"])
    assert cfg == {**BUILTIN_DEFAULTS, "daemon": True, "logging": True, "seed": 5}


def test_gpu_and_no_gpu_are_mutually_exclusive(capsys: pytest.CaptureFixture) -> None:
    err = fails(ArgumentParser(), ["--gpu", "1", "--no-gpu"], capsys)
    assert "--no-gpu: not allowed with argument --gpu" in err


def test_dist_accepts_only_torch_or_slurm(capsys: pytest.CaptureFixture) -> None:
    err = fails(ArgumentParser(), ["--dist", "mpi"], capsys)
    assert "argument --dist: invalid choice: 'mpi'" in err
    assert "torch" in err.split("mpi")[-1]
    assert "slurm" in err.split("mpi")[-1]


def test_bad_builtin_values_name_the_option_and_type(capsys: pytest.CaptureFixture) -> None:
    for argv, message in [
        (["-s", "abc"], "argument -s/--seed: invalid int value: 'abc'"),
        (["--gpu", "x"], "argument --gpu: invalid int value: 'x'"),
        (["--cfg", "seed=abc"], "argument --seed: invalid int value: 'abc'"),
        (["--cfg", "gpu=true"], "argument --gpu: invalid int value: True"),
    ]:
        assert message in fails(ArgumentParser(), argv, capsys)


@pytest.mark.parametrize(
    ("text", "gpus"), [("gpu: [1, 3]", [1, 3]), ("gpu: 2", [2]), ('gpu: "0,2"', [0, 2])]
)
def test_gpu_from_a_config_file_becomes_a_list(tmp_path: Path, text: str, gpus: list[int]) -> None:
    path = write(tmp_path / "gpu.yml", text)
    assert ArgumentParser().parse_args(["--cfg", str(path)]).gpu == gpus


# --- config files and precedence -------------------------------------------------------------


def test_multiple_cfg_files_merge_in_order(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yml", "x: 1\nnested: {a: 1, b: 1}\nonly_a: yes\n")
    b = write(tmp_path / "b.yml", "x: 2\nnested: {b: 2}\n")
    cfg = ArgumentParser().parse_args(["--cfg", str(a), str(b)])
    assert (cfg.x, cfg.nested, cfg.only_a) == (2, {"a": 1, "b": 2}, True)
    assert cfg.cfg == [str(a), str(b)]
    assert ArgumentParser().parse_args(["--cfg", str(b), str(a)]).x == 1


def test_precedence_default_file_option_override(tmp_path: Path) -> None:
    path = str(write(tmp_path / "run.yml", "seed: 1\n"))
    parser = ArgumentParser()
    assert parser.parse_args([]).seed == 1204
    assert parser.parse_args(["--cfg", path]).seed == 1
    assert parser.parse_args(["--cfg", path, "-s", "2"]).seed == 2
    assert parser.parse_args(["-s", "2", "--cfg", path]).seed == 2
    assert parser.parse_args(["--cfg", path, "seed=3", "-s", "2"]).seed == 3
    assert parser.parse_args(["--se", "2", "--cfg", path]).seed == 2  # abbreviations count too


def test_app_option_obeys_the_same_precedence(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = str(write(tmp_path / "run.yml", "lr: 0.01\n"))
    parser = ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    assert parser.parse_args([]).lr == 0.1
    assert parser.parse_args(["--cfg", path]).lr == 0.01
    assert parser.parse_args(["--cfg", path, "--lr", "0.2"]).lr == 0.2
    assert parser.parse_args(["--lr", "0.2", "--cfg", path, "lr=0.3"]).lr == 0.3
    assert "argument --lr: invalid float value: 'abc'" in fails(parser, ["--cfg", "lr=abc"], capsys)


def test_missing_cfg_file_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = fails(ArgumentParser(prog="prog"), ["--cfg", str(tmp_path / "nope.yml")], capsys)
    assert "prog: error:" in err
    assert "nope.yml" in err
    assert "not found" in err


# --- options from a function's signature -----------------------------------------------------


class Color(enum.Enum):
    red = "r"
    blue = "b"


def train(*, lr: float = 1e-3, epochs: int = 10, data: str = "digits") -> dict[str, object]:
    """Train a small model on digits.

    Args:
        lr: the learning rate of the optimizer
        epochs: how many passes over the training data
        data: which bundled data set to train on
    """
    return {"lr": lr, "epochs": epochs, "data": data}


def kinds(
    name: str,
    *,
    fast: bool = False,
    mode: Literal["a", "b"] = "a",
    color: Color = Color.red,
    ids: list[int] | None = None,
    limit: Optional[int] = None,  # noqa: UP045 (typing.Optional is supported too)
    seed: int = 7,
) -> None:
    """Every kind of parameter."""


def test_function_options_from_the_signature() -> None:
    parser = parser_for(train)
    cfg = parser.parse_args([])
    assert cfg == {**BUILTIN_DEFAULTS, "lr": 1e-3, "epochs": 10, "data": "digits"}
    cfg = parser.parse_args(["--lr", "0.5", "--epochs", "3", "--data", "iris", "-s", "9"])
    assert (cfg.lr, cfg.epochs, cfg.data, cfg.seed) == (0.5, 3, "iris", 9)
    assert type(cfg.lr) is float
    assert type(cfg.epochs) is int


def test_help_shows_the_docstring(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        parser_for(train, prog="train").parse_args(["--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in (
        "Train a small model on digits.",
        "--lr LR the learning rate of the optimizer (default: 0.001)",
        "--epochs EPOCHS how many passes over the training data (default: 10)",
        "--data DATA which bundled data set to train on (default: digits)",
        "--cfg",
        "--seed SEED",
        "--no-gpu",
    ):
        assert text in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
        (["--epochs", "2.5"], "argument --epochs: invalid int value: '2.5'"),
        (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    ],
)
def test_bad_function_values(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert message in fails(parser_for(train), argv, capsys)


def test_cfg_values_for_function_params_are_converted(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    parser = parser_for(train)
    cfg = parser.parse_args(["--cfg", str(write(tmp_path / "ok.yml", 'epochs: "3"\nlr: 1\n'))])
    assert (cfg.epochs, cfg.lr) == (3, 1.0)
    assert (type(cfg.epochs), type(cfg.lr)) == (int, float)
    bad = str(write(tmp_path / "bad.yml", "epochs: 3.5\n"))
    assert "argument --epochs: invalid int value: 3.5" in fails(parser, ["--cfg", bad], capsys)
    # an override beats the command line, so it is checked as well
    err = fails(parser, ["--epochs", "5", "--cfg", "epochs=3.5"], capsys)
    assert "argument --epochs: invalid int value: 3.5" in err
    assert "invalid int value: true" in fails(parser, ["--cfg", "epochs=true"], capsys).lower()


def test_bool_literal_enum_list_optional_params(capsys: pytest.CaptureFixture) -> None:
    parser = parser_for(kinds)
    cfg = parser.parse_args(["--name", "n"])
    expected = {"fast": False, "mode": "a", "color": Color.red, "ids": None, "limit": None}
    assert {k: cfg[k] for k in expected} == expected
    argv = ["--name", "n", "--fast", "--mode", "b", "--color", "blue", "--ids", "1", "2"]
    cfg = parser.parse_args([*argv, "--limit", "4"])
    assert [cfg.fast, cfg.mode, cfg.color, cfg.ids, cfg.limit] == [True, "b", Color.blue, [1, 2], 4]
    assert parser.parse_args(["--name", "n", "--fast", "--no-fast"]).fast is False
    assert parser.parse_args(["--name", "n", "--color", "b"]).color is Color.blue  # by value
    overrides = ["fast=yes", "mode=b", "color=blue", "ids=[3, '4']", "limit='5'"]
    cfg = parser.parse_args(["--cfg", "name=n", *overrides])
    assert [cfg.fast, cfg.mode, cfg.color, cfg.ids, cfg.limit] == [True, "b", Color.blue, [3, 4], 5]
    assert parser.parse_args(["--name", "n", "--cfg", "limit=null"]).limit is None
    for argv, message in [
        (["--mode", "c"], "argument --mode: invalid choice: 'c' (choose from a, b)"),
        (["--color", "green"], "argument --color: invalid choice: 'green' (choose from red, blue)"),
        (["--ids", "1", "x"], "argument --ids: invalid int value: 'x'"),
        (["--limit", "many"], "argument --limit: invalid int value: 'many'"),
        (["--cfg", "fast=maybe"], "argument --fast: invalid bool value: 'maybe'"),
        (["--cfg", "mode=c"], "argument --mode: invalid choice: 'c'"),
    ]:
        assert message in fails(parser, ["--name", "n", *argv], capsys)


def test_required_params(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = parser_for(kinds)
    assert "the following arguments are required: --name" in fails(parser, [], capsys)
    assert parser.parse_args(["--name", "cli"]).name == "cli"
    assert parser.parse_args(["--cfg", "name=override"]).name == "override"
    path = write(tmp_path / "run.yml", "name: file\n")
    assert parser.parse_args(["--cfg", str(path)]).name == "file"
    assert "(required)" in parser.format_help()


def test_param_named_like_a_builtin_takes_the_function_default() -> None:
    parser = parser_for(kinds)
    assert parser.parse_args(["--name", "n"]).seed == 7
    assert parser.parse_args(["--name", "n", "-s", "3"]).seed == 3
    assert parser.parse_args(["--name", "n", "--cfg", "seed=4"]).seed == 4
    assert parser.defaults().seed == 7


def test_call_with_config() -> None:
    def fn(a, /, b, *, c=3, cfg=None):
        return a, b, c, cfg

    cfg = Config(a=1, b=2, other=0)
    assert call_with_config(fn, cfg) == (1, 2, 3, cfg)
    assert call_with_config(fn, cfg, c=9, b=8) == (1, 8, 9, cfg)
    expected = {"lr": 1e-3, "epochs": 2, "data": "digits"}
    assert call_with_config(train, Config(epochs=2, unrelated=1)) == expected
    with pytest.raises(ArgumentError, match=r"needs 'b'.*--b or b=VALUE"):
        call_with_config(fn, Config(a=1))
    assert parser_for(train).call(Config(lr=0.5)) == {"lr": 0.5, "epochs": 10, "data": "digits"}


def test_app_run_builds_the_command_line_from_the_function(tmp_path: Path) -> None:
    script = write(
        tmp_path / "train.py",
        '''
        import json
        from forgeml import app


        def train(*, lr: float = 1e-3, epochs: int = 10, data: str = "digits"):
            """Train.

            Args:
                lr: the learning rate
            """
            print(json.dumps({"lr": lr, "epochs": epochs, "data": data}))


        if __name__ == "__main__":
            app.run(train)
        ''',
    )
    config = write(tmp_path / "run.yml", "epochs: '4'\ndata: iris\n")

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return run_program([sys.executable, str(script), *argv], tmp_path)

    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"lr": 1e-3, "epochs": 10, "data": "digits"}
    proc = run("--lr", "0.5", "--cfg", str(config), "data=wine")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"lr": 0.5, "epochs": 4, "data": "wine"}
    proc = run("--epochs", "many")
    assert proc.returncode == 2
    assert "argument --epochs: invalid int value: 'many'" in proc.stderr
    assert proc.stdout == ""
    proc = run("--help")
    assert proc.returncode == 0
    assert "the learning rate" in proc.stdout
    assert "--seed" in proc.stdout
