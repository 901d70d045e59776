"""``forgeml.secrets`` and ``forgeml secrets``: a real encrypted file, a real (file) keyring,
jobs launched with their secrets, and masking in logs, tracebacks and config dumps."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pty
import select
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backend
import keyring.backends.fail
import keyring.backends.null
import pytest
import yaml
from click.testing import CliRunner, Result
from keyrings.alt.file import PlaintextKeyring

from forgeml import SecretsError, secrets
from forgeml.cli import cli
from forgeml.config import Config
from forgeml.secrets import _mask

VALUE = "s3cr3t-Pa55 with 'quotes' \"and\" $dollars"
FORGEML = [sys.executable, "-m", "forgeml"]


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["secrets", *args], input=input, prog_name="forgeml")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A secrets file in tmp_path, no key in the environment, a file keyring in tmp_path,
    and an empty masker; masking of logs is undone after the test."""
    path = tmp_path / "config" / "secrets.enc"
    monkeypatch.setenv("FORGEML_SECRETS_FILE", str(path))
    for name in ("FORGEML_SECRETS_KEY", "FORGEML_SECRET_NAMES", "PYTHON_KEYRING_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_mask, "_registered", set())
    monkeypatch.setattr(_mask, "_cache", (None, None))
    previous = keyring.get_keyring()
    keyring.set_keyring(file_keyring(tmp_path / "keyring"))
    try:
        yield path
    finally:
        keyring.set_keyring(previous)
        _mask.uninstall_log_masking()


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = secrets.generate_key()
    monkeypatch.setenv("FORGEML_SECRETS_KEY", value)
    return value


def file_keyring(folder: Path) -> keyring.backend.KeyringBackend:
    backend = PlaintextKeyring()
    backend.file_path = str(folder / "keyring_pass.cfg")  # type: ignore[misc]
    return backend


def subprocess_env(path: Path, key: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "FORGEML_SECRETS_FILE": str(path), "FORGEML_SECRETS_KEY": key, **extra}
    for name in ("FORGEML_SECRET_NAMES", "RANK", "WORLD_SIZE"):
        env.pop(name, None)
    return env


# ----------------------------------------------------------------------------- the CLI


def test_set_get_ls_rm_through_the_cli(isolated: Path, key: str) -> None:
    assert invoke("set", "DB_PASSWORD", input=VALUE + "\n").exit_code == 0
    result = invoke("set", "API_TOKEN", input="tok-123456")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"Saved secret API_TOKEN in {isolated}" in result.stderr
    got = invoke("get", "DB_PASSWORD")
    assert got.exit_code == 0
    assert got.stdout == VALUE + "\n"  # the value only; one final newline was dropped on set
    assert invoke("ls").stdout == "API_TOKEN\nDB_PASSWORD\n"
    assert json.loads(invoke("ls", "--json").stdout) == ["API_TOKEN", "DB_PASSWORD"]
    assert VALUE not in invoke("ls").output
    removed = invoke("rm", "API_TOKEN")
    assert removed.exit_code == 0
    assert invoke("ls").stdout == "DB_PASSWORD\n"


def test_set_replaces_and_keeps_values_as_given(key: str) -> None:
    invoke("set", "PEM", input="first")
    multi = "-----BEGIN KEY-----\nabc def\n-----END KEY-----\n"
    assert invoke("set", "PEM", input=multi + "\n").exit_code == 0
    assert secrets.SecretStore().get("PEM") == multi


def test_file_is_private_encrypted_and_documented(isolated: Path, key: str) -> None:
    invoke("set", "DB_PASSWORD", input=VALUE)
    assert stat.S_IMODE(isolated.stat().st_mode) == 0o600
    assert stat.S_IMODE(isolated.parent.stat().st_mode) == 0o700  # created by forgeml
    raw = isolated.read_bytes()
    assert VALUE.encode() not in raw
    assert b"DB_PASSWORD" not in raw  # names are encrypted too
    header = json.loads(raw)
    assert {k: header[k] for k in ("format", "version", "cipher")} == {
        "format": "forgeml-secrets",
        "version": 1,
        "cipher": "fernet",
    }
    from cryptography.fernet import Fernet

    assert json.loads(Fernet(key).decrypt(header["token"])) == {"DB_PASSWORD": VALUE}
    assert sorted(p.name for p in isolated.parent.iterdir()) == ["secrets.enc"]  # no temp files


def test_a_file_others_can_read_is_reported_and_fixed_on_write(
    isolated: Path, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    invoke("set", "A_SECRET", input="value-1")
    isolated.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="forgeml.secrets"):
        assert invoke("get", "A_SECRET").stdout == "value-1\n"
    assert "chmod 600" in caplog.text
    invoke("set", "A_SECRET", input="value-2")
    assert stat.S_IMODE(isolated.stat().st_mode) == 0o600


def test_wrong_key_is_a_clear_error_with_no_output(
    isolated: Path, key: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    invoke("set", "DB_PASSWORD", input=VALUE)
    invoke("set", "API_TOKEN", input="tok-123456")
    before = isolated.read_bytes()
    monkeypatch.setenv("FORGEML_SECRETS_KEY", secrets.generate_key())
    marker = tmp_path / "ran"
    for args in (
        ["get", "DB_PASSWORD"],
        ["ls"],
        ["export"],
        ["set", "OTHER"],
        ["rm", "API_TOKEN"],
        ["env", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
    ):
        result = invoke(*args, input="new-value")
        assert result.exit_code == 1, args
        assert result.stdout == "", args
        assert f"Cannot decrypt {isolated} with this key (FORGEML_SECRETS_KEY)" in result.stderr
        assert VALUE not in result.output
    assert not marker.exists()  # the command never ran
    assert isolated.read_bytes() == before  # nothing was rewritten


def test_a_malformed_key_or_file_is_a_clear_error(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGEML_SECRETS_KEY", "not-a-key")
    result = invoke("set", "A_SECRET", input="value")
    assert result.exit_code == 1
    assert "is not a valid key" in result.stderr
    assert "not-a-key" not in result.stderr  # a key is never printed
    monkeypatch.setenv("FORGEML_SECRETS_KEY", secrets.generate_key())
    isolated.parent.mkdir(parents=True, exist_ok=True)
    isolated.write_text("PASSWORD=plain\n")
    result = invoke("ls")
    assert result.exit_code == 1
    assert "is not a forgeml secrets file" in result.stderr


def test_names_are_checked(key: str) -> None:
    for bad in ("1ST", "MY-KEY", "A B", ""):
        result = invoke("set", bad, input="value")
        assert result.exit_code == 1, bad
        assert "must be an environment variable name" in result.stderr
    result = invoke("set", "FORGEML_SECRETS_KEY", input="value")
    assert "used by forgeml itself" in result.stderr
    invoke("set", "DB_PASSWORD", input="value")
    result = invoke("get", "DB_PASWORD")
    assert result.exit_code == 1
    assert "No secret named 'DB_PASWORD'" in result.stderr
    assert "Did you mean 'DB_PASSWORD'?" in result.stderr
    result = invoke("rm", "DB_PASSWORD", "NOPE")
    assert result.exit_code == 1
    assert invoke("ls").stdout == "DB_PASSWORD\n"  # nothing removed


def test_empty_values_are_refused_and_short_ones_warned(key: str) -> None:
    result = invoke("set", "EMPTY", input="\n")
    assert result.exit_code == 1
    assert "is empty" in result.stderr
    result = invoke("set", "PIN", input="123")
    assert result.exit_code == 0
    assert "not masked" in result.stderr


def test_without_a_file_nothing_is_listed_and_no_key_is_needed(isolated: Path) -> None:
    keyring.set_keyring(keyring.backends.fail.Keyring())
    result = invoke("ls")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert invoke("export").stdout == ""
    assert not isolated.exists()


def test_export_lines_round_trip_through_a_shell(key: str, tmp_path: Path) -> None:
    invoke("set", "DB_PASSWORD", input=VALUE)
    invoke("set", "API_TOKEN", input="tok-123456")
    result = invoke("export", "DB_PASSWORD")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("export DB_PASSWORD='")
    assert lines[1] == "export FORGEML_SECRET_NAMES=DB_PASSWORD"
    envrc = tmp_path / ".envrc"
    envrc.write_text(invoke("export").stdout)
    shell = subprocess.run(
        ["bash", "-c", '. ./.envrc; printf "%s\\n%s" "$DB_PASSWORD" "$FORGEML_SECRET_NAMES"'],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == f"{VALUE}\nAPI_TOKEN,DB_PASSWORD"


def test_keygen_prints_a_usable_key() -> None:
    result = invoke("keygen")
    assert result.exit_code == 0
    from cryptography.fernet import Fernet

    Fernet(result.stdout.strip())  # a valid key
    assert len(result.stdout.strip()) == 44


# ----------------------------------------------------------------------------- the key


def test_the_first_set_creates_the_key_in_the_keyring(isolated: Path) -> None:
    assert keyring.get_password("forgeml", "secrets-key") is None
    result = invoke("set", "DB_PASSWORD", input=VALUE)
    assert result.exit_code == 0, result.output
    stored = keyring.get_password("forgeml", "secrets-key")
    assert stored is not None
    assert secrets.SecretStore(key=stored).get("DB_PASSWORD") == VALUE
    assert invoke("get", "DB_PASSWORD").stdout == VALUE + "\n"  # the same key is found again
    invoke("set", "OTHER", input="value")
    assert keyring.get_password("forgeml", "secrets-key") == stored  # not replaced


def test_the_env_key_wins_over_the_keyring(isolated: Path, key: str) -> None:
    invoke("set", "DB_PASSWORD", input=VALUE)
    assert keyring.get_password("forgeml", "secrets-key") is None  # never touched


def test_headless_without_a_keyring_says_to_set_the_env_key(isolated: Path) -> None:
    keyring.set_keyring(keyring.backends.fail.Keyring())
    result = invoke("set", "DB_PASSWORD", input=VALUE)
    assert result.exit_code == 1
    assert "FORGEML_SECRETS_KEY is not set and no OS keyring is available" in result.stderr
    assert "export FORGEML_SECRETS_KEY=$(forgeml secrets keygen)" in result.stderr
    assert not isolated.exists()
    keyring.set_keyring(keyring.backends.null.Keyring())  # accepts keys and forgets them
    result = invoke("set", "DB_PASSWORD", input=VALUE)
    assert result.exit_code == 1
    assert "did not keep a new secrets key" in result.stderr
    assert not isolated.exists()


def test_a_file_without_its_key_is_a_clear_error(isolated: Path) -> None:
    invoke("set", "DB_PASSWORD", input=VALUE)
    keyring.set_keyring(file_keyring(isolated.parent / "other-keyring"))
    result = invoke("get", "DB_PASSWORD")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "holds no 'forgeml/secrets-key' entry" in result.stderr


def test_set_on_a_file_whose_key_is_lost_makes_no_new_key(isolated: Path) -> None:
    invoke("set", "DB_PASSWORD", input=VALUE)
    written = isolated.read_bytes()
    other = file_keyring(isolated.parent / "other-keyring")
    keyring.set_keyring(other)  # the keyring entry is gone
    result = invoke("set", "API_TOKEN", input="tok-123456")
    assert result.exit_code == 1
    assert "holds no 'forgeml/secrets-key' entry" in result.stderr
    assert "FORGEML_SECRETS_KEY" in result.stderr
    assert other.get_password("forgeml", "secrets-key") is None  # no key that cannot read it
    assert isolated.read_bytes() == written


# ----------------------------------------------------------------------------- jobs


def test_env_runs_the_command_with_the_secrets_and_its_exit_status(
    isolated: Path, key: str
) -> None:
    invoke("set", "DB_PASSWORD", input=VALUE)
    invoke("set", "API_TOKEN", input="tok-123456")
    code = (
        "import json, os, sys; "
        "print(json.dumps({k: os.environ.get(k) for k in "
        "('DB_PASSWORD', 'API_TOKEN', 'FORGEML_SECRET_NAMES')})); sys.exit(7)"
    )
    done = subprocess.run(
        [*FORGEML, "secrets", "env", "--", sys.executable, "-c", code],
        env=subprocess_env(isolated, key),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 7, done.stderr
    assert json.loads(done.stdout) == {
        "DB_PASSWORD": VALUE,
        "API_TOKEN": "tok-123456",
        "FORGEML_SECRET_NAMES": "API_TOKEN,DB_PASSWORD",
    }
    only = subprocess.run(
        [*FORGEML, "secrets", "env", "-n", "API_TOKEN", "--", sys.executable, "-c", code],
        env=subprocess_env(isolated, key),
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(only.stdout)["DB_PASSWORD"] is None
    missing = invoke("env", "--", "no-such-command-here")
    assert missing.exit_code == 1
    assert "no such command" in missing.stderr


def test_set_prompts_without_echo(isolated: Path, key: str) -> None:
    env = subprocess_env(isolated, key)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its terminal
        os.execve(sys.executable, [*FORGEML, "secrets", "set", "DB_PASSWORD"], env)
    transcript = b""

    def read_until(marker: bytes, timeout: float = 30.0) -> None:
        nonlocal transcript
        deadline = time.monotonic() + timeout
        while marker not in transcript:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no {marker!r} in {transcript!r}")
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"no {marker!r} in {transcript!r}")
            transcript += chunk

    try:
        read_until(b"Value of DB_PASSWORD:")
        os.write(fd, VALUE.encode() + b"\n")
        read_until(b"Repeat for confirmation:")
        os.write(fd, VALUE.encode() + b"\n")
        read_until(b"Saved secret DB_PASSWORD")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, transcript
    assert VALUE.encode() not in transcript  # never echoed
    assert secrets.SecretStore().get("DB_PASSWORD") == VALUE


JOB = """
import hashlib, logging, os
from forgeml import app

log = logging.getLogger("job")


def main(cfg):
    password = os.environ["DB_PASSWORD"]
    print("sha256", hashlib.sha256(password.encode()).hexdigest())
    log.info("connecting with password=%s", password)
    log.info("config %s", dict(cfg))
    raise ConnectionError(f"login refused for password {password!r}")


if __name__ == "__main__":
    app.run(main, {"logging": True, "logfile": "logs/job.log", "db": {"user": "me"}})
"""


@pytest.mark.slow
def test_a_job_reads_its_secret_and_no_artifact_holds_it(
    isolated: Path, key: str, tmp_path: Path
) -> None:
    invoke("set", "DB_PASSWORD", input=VALUE)
    work = tmp_path / "work"
    work.mkdir()
    (work / "job.py").write_text(JOB, encoding="utf-8")
    done = subprocess.run(
        [*FORGEML, "secrets", "env", "--", sys.executable, "job.py"],
        cwd=work,
        env=subprocess_env(isolated, key),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr  # app.run's exit status for a failed main
    digest = hashlib.sha256(VALUE.encode()).hexdigest()
    assert f"sha256 {digest}" in done.stdout  # the job could read it
    log_text = (work / "logs" / "job.log").read_text()
    assert "connecting with password=***" in log_text
    assert "login refused for password '***'" in log_text  # the logged traceback
    assert "ConnectionError" in done.stderr
    for text in (done.stderr, log_text):
        assert VALUE not in text
        assert json.dumps(VALUE)[1:-1] not in text
        assert repr(VALUE)[1:-1] not in text
    for path in work.rglob("*"):
        if path.is_file():
            assert VALUE.encode() not in path.read_bytes(), path


def test_a_plain_script_masks_after_install_log_masking(
    isolated: Path, key: str, tmp_path: Path
) -> None:
    invoke("set", "API_TOKEN", input="tok-abcdef-123")
    code = textwrap.dedent(
        """
        import logging, os
        from forgeml import secrets
        secrets.install_log_masking()
        logging.basicConfig(filename="job.log", level=logging.INFO)
        logging.info("token is %s", os.environ["API_TOKEN"])
        print(os.environ["API_TOKEN"])
        raise RuntimeError("bad token " + os.environ["API_TOKEN"])
        """
    )
    done = subprocess.run(
        [*FORGEML, "secrets", "env", "--", sys.executable, "-c", code],
        cwd=tmp_path,
        env=subprocess_env(isolated, key),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == "tok-abcdef-123\n"  # readable by the job
    assert (tmp_path / "job.log").read_text() == "INFO:root:token is ***\n"
    assert "RuntimeError: bad token ***" in done.stderr
    assert "tok-abcdef-123" not in done.stderr


def test_inject_adds_secrets_and_their_names(key: str) -> None:
    store = secrets.SecretStore()
    store.set("DB_PASSWORD", VALUE)
    store.set("API_TOKEN", "tok-123456")
    env = secrets.inject({"PATH": "/bin", "FORGEML_SECRET_NAMES": "OLD"}, names=["DB_PASSWORD"])
    assert env == {
        "PATH": "/bin",
        "DB_PASSWORD": VALUE,
        "FORGEML_SECRET_NAMES": "OLD,DB_PASSWORD",
    }
    assert secrets.inject({}) == {
        "API_TOKEN": "tok-123456",
        "DB_PASSWORD": VALUE,
        "FORGEML_SECRET_NAMES": "API_TOKEN,DB_PASSWORD",
    }
    with pytest.raises(SecretsError, match="No secret named 'NOPE'"):
        secrets.inject({}, names=["NOPE"])


# ----------------------------------------------------------------------------- masking


def test_loaded_values_are_masked_in_text_and_trees(key: str) -> None:
    secrets.SecretStore().set("DB_PASSWORD", VALUE)
    _mask._registered.clear()
    _mask._cache = (None, None)
    assert secrets.mask(f"pw={VALUE}") == f"pw={VALUE}"  # nothing loaded in this process
    secrets.SecretStore().load()
    assert secrets.mask(f"pw={VALUE}!") == "pw=***!"
    assert secrets.mask(json.dumps({"pw": VALUE})) == '{"pw": "***"}'
    assert VALUE not in secrets.mask(repr({"pw": VALUE}))
    cfg = Config(db={"user": "me", "password": VALUE}, hosts=[f"x:{VALUE}"], n=3)
    masked = secrets.mask_tree(cfg)
    assert isinstance(masked, Config)
    assert masked == Config(db={"user": "me", "password": "***"}, hosts=["x:***"], n=3)
    assert cfg.db.password == VALUE  # a copy; the config is unchanged
    dump = secrets.mask_tree(cfg).dump()  # what `forgeml config show` and trackers write
    assert VALUE not in dump
    assert "password: '***'" in dump
    assert yaml.safe_load(dump)["db"]["password"] == "***"
    assert VALUE not in secrets.mask(cfg.dump("json"))  # or mask the dumped text


def test_short_values_and_other_text_are_left_alone() -> None:
    secrets.add_mask("abc", "longer-secret")
    assert secrets.mask("abc and longer-secret") == "abc and ***"
    assert secrets.mask("nothing here") == "nothing here"


def test_values_named_in_the_environment_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_TOKEN", "env-provided-token")
    assert secrets.mask("env-provided-token") == "env-provided-token"
    monkeypatch.setenv("FORGEML_SECRET_NAMES", "OTHER,MY_TOKEN")
    assert secrets.mask("t=env-provided-token") == "t=***"


def test_log_masking_covers_messages_args_and_tracebacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secrets.add_mask("hunter2-secret")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test_secrets.job")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("before install: %s", "hunter2-secret")
        secrets.install_log_masking()
        secrets.install_log_masking()  # idempotent
        logger.warning("password %s in %r", "hunter2-secret", {"pw": "hunter2-secret"})
        try:
            raise ValueError("bad password hunter2-secret")
        except ValueError:
            logger.exception("login failed")
        logger.warning("%d%% done", 50)  # formatting without secrets is untouched
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = stream.getvalue()
    assert lines.startswith("before install: hunter2-secret\n")
    after = lines.split("\n", 1)[1]
    assert "hunter2-secret" not in after
    assert "password *** in {'pw': '***'}" in after
    assert "ValueError: bad password ***" in after
    assert "50% done" in after
    try:
        raise RuntimeError("token hunter2-secret")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert "RuntimeError: token ***" in err
    assert "hunter2-secret" not in err


def test_masking_filter_on_one_handler() -> None:
    secrets.add_mask("hunter2-secret")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(secrets.MaskingFilter())
    logger = logging.getLogger("test_secrets.filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("pw=%s", "hunter2-secret")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert stream.getvalue() == "pw=***\n"


def test_the_key_in_the_environment_is_masked_too(key: str) -> None:
    assert secrets.mask(f"FORGEML_SECRETS_KEY={key}") == "FORGEML_SECRETS_KEY=***"
