"""The shared internals: registries, post-import hooks, atomic files, error hints."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from forgeml._core._errors import RegistryError, did_you_mean
from forgeml._core._files import atomic_open, atomic_write_text
from forgeml._core._lazy import is_installed
from forgeml._core._registry import Registry


def test_registry_loads_lazily_and_resolves_aliases() -> None:
    reg = Registry("things")
    reg.register("json", "json:dumps", aliases=("js",))
    assert "json" not in reg._loaded
    assert reg.load("js") is reg.load("json")
    assert reg.names() == ["json"]
    assert "js" in reg
    assert "yaml" not in reg


def test_registry_unknown_name_suggests() -> None:
    reg = Registry("agent")
    reg.register("pytorch", "json:dumps")
    reg.register("onnxruntime", "json:loads")
    with pytest.raises(RegistryError) as info:
        reg.load("pytroch")
    assert str(info.value) == (
        "Unknown agent 'pytroch'. Known: onnxruntime, pytorch. Did you mean 'pytorch'?"
    )


def test_registry_missing_package_gives_install_hint() -> None:
    reg = Registry("frameworks")
    reg.register("ghost", "forgeml_ghost_module:adapter", hint="pip install ghost")
    with pytest.raises(RegistryError, match=r"not installed.*HINT: pip install ghost"):
        reg.load("ghost")


def test_registry_rejects_bad_target() -> None:
    with pytest.raises(RegistryError, match=r"package\.module:Attr"):
        Registry("x").register("a", "no_colon")


def test_did_you_mean() -> None:
    assert did_you_mean("confg", ["config", "ps"]) == " Did you mean 'config'?"
    assert did_you_mean("zzz", ["config", "ps"]) == ""


def test_is_installed_does_not_import() -> None:
    code = "import sys; from forgeml._core._lazy import is_installed; "
    code += "print(is_installed('torch'), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(is_installed("torch")), "False"]


def test_when_imported_runs_after_a_later_import(tmp_path: Path) -> None:
    (tmp_path / "late_module.py").write_text("VALUE = 1\n")
    script = textwrap.dedent(
        """
        import sys
        from forgeml._core._lazy import when_imported
        seen = []
        when_imported("late_module", lambda m: seen.append(("first", m.VALUE)), key="k")
        when_imported("late_module", lambda m: seen.append(("second", m.VALUE)), key="k")
        when_imported("os", lambda m: seen.append(("os", m.__name__)))
        assert seen == [("os", "os")], seen
        import late_module
        assert seen == [("os", "os"), ("second", 1)], seen
        assert type(late_module.__loader__).__name__ == "SourceFileLoader"
        assert late_module.__spec__.loader is late_module.__loader__
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_atomic_write_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def interrupted_write() -> None:
        with atomic_open(target, binary=True) as f:
            f.write(b"partial")
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        interrupted_write()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_atomic_write_keeps_permissions(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("x")
    target.chmod(0o640)
    atomic_write_text(target, "y")
    assert target.stat().st_mode & 0o777 == 0o640


def test_killed_writer_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    script = textwrap.dedent(
        f"""
        import os, signal
        from forgeml._core._files import atomic_open
        with atomic_open({str(target)!r}) as f:
            f.write("new" * 1000)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False)
    assert proc.returncode == -9
    assert target.read_text() == "old"


def test_process_rank_reads_rank_then_slurm_procid_then_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from forgeml._core._env import is_rank_zero, process_rank

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    assert process_rank() == 0
    assert process_rank({"rank": -1}) == 0  # --rank's default: not distributed
    assert process_rank({"rank": 2}) == 2
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert process_rank({"rank": 2}) == 3
    monkeypatch.setenv("RANK", "0")
    assert process_rank({"rank": 2}) == 0  # RANK comes first (a launcher inside Slurm)
    assert is_rank_zero({"rank": 2})
    monkeypatch.setenv("RANK", " ")  # empty: not set
    assert not is_rank_zero()


def test_format_duration() -> None:
    from forgeml._core._format import format_duration

    assert format_duration(2.345) == "2.3 s"
    assert format_duration(75.9) == "1:15"
    assert format_duration(3725.4) == "1:02:05"
