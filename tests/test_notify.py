"""``forgeml.notify``: posts to a real HTTP receiver on 127.0.0.1 (JSON and Slack), bounded
timeouts against a receiver that hangs, a receiver that answers 500, rank filtering, masking."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from forgeml import NotifyError, notify
from forgeml.config import Config
from forgeml.secrets import _mask

PAYLOAD_KEYS = {"event", "job", "host", "args", "result", "metrics", "traceback", "duration"}


class Receiver:
    """A webhook receiver on 127.0.0.1: ``mode`` is "ok", "hang" (never answers until the
    test ends) or "500"."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.posts: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.release = threading.Event()
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._arrived:
                    receiver.posts.append(json.loads(body))
                    receiver.headers.append(dict(self.headers))
                    receiver.paths.append(self.path)
                    receiver._arrived.notify_all()
                if receiver.mode == "hang":
                    receiver.release.wait(30)
                code = 500 if receiver.mode == "500" else 200
                answer = b"internal error" if code == 500 else b"ok"
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:  # the client gave up waiting (the hang test)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0K3N"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.posts) < count and time.monotonic() < deadline:
                self._arrived.wait(deadline - time.monotonic())
        return list(self.posts)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "RANK",
        "SLURM_PROCID",
        "FORGEML_WEBHOOK_URL",
        "SLACK_WEBHOOK_URL",
        "FORGEML_NOTIFY_TIMEOUT",
        "FORGEML_SECRET_NAMES",
        *("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"),  # the receiver is local
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_mask, "_registered", set())
    monkeypatch.setattr(_mask, "_cache", (None, None))


@pytest.fixture
def started_posts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The events of the posts started (each on a thread of its own), in order."""
    from forgeml.notify import _decorator

    events: list[str] = []
    put = _decorator._Outbox.put

    def recording_put(self: Any, payload: dict[str, Any]) -> None:
        events.append(payload["event"])
        put(self, payload)

    monkeypatch.setattr(_decorator._Outbox, "put", recording_put)
    return events


def test_start_and_complete_payloads(receiver: Receiver) -> None:
    @notify.on(webhook_url=receiver.url, job="train")
    def train(data: str, *, lr: float = 0.1, epochs: int = 2) -> dict[str, Any]:
        notify.log_metrics(loss=0.25)
        return {"accuracy": 0.93, "epochs": epochs, "note": "fine"}

    assert train("digits", lr=0.5) == {"accuracy": 0.93, "epochs": 2, "note": "fine"}
    start, done = receiver.wait_for(2)
    assert set(start) >= PAYLOAD_KEYS
    assert set(done) >= PAYLOAD_KEYS
    assert start["event"] == "start"
    assert start["job"] == "train"
    assert start["args"] == {"data": "digits", "lr": 0.5, "epochs": 2}
    assert start["result"] is None
    assert start["duration"] is None
    assert done["event"] == "complete"
    assert done["result"] == {"accuracy": 0.93, "epochs": 2, "note": "fine"}
    assert done["metrics"] == {"accuracy": 0.93, "epochs": 2, "loss": 0.25}
    assert isinstance(done["duration"], float)
    assert done["duration"] >= 0
    assert done["traceback"] is None
    assert done["host"] == start["host"]
    assert receiver.headers[0]["Content-Type"].startswith("application/json")


def test_failure_payload_carries_the_traceback_and_the_exception_is_unchanged(
    receiver: Receiver,
) -> None:
    error = ValueError("the loss is nan")

    @notify.on(webhook_url=receiver.url, start=False)
    def train() -> None:
        raise error

    with pytest.raises(ValueError) as caught:
        train()
    assert caught.value is error
    (post,) = receiver.wait_for(1)
    assert post["event"] == "failure"
    assert post["job"].endswith(
        "test_failure_payload_carries_the_traceback_and_the_exception_is_unchanged.<locals>.train"
    )
    assert post["error"] == "ValueError: the loss is nan"
    assert "Traceback (most recent call last)" in post["traceback"]
    assert "raise error" in post["traceback"]
    assert post["result"] is None


def test_events_can_be_turned_off(receiver: Receiver, started_posts: list[str]) -> None:
    @notify.on(webhook_url=receiver.url, start=False, complete=False)
    def quiet(x: int) -> int:
        return x

    assert quiet(3) == 3
    assert started_posts == []  # no post was started, so none can arrive later
    assert receiver.posts == []


def test_bare_decorator_and_system_exit(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGEML_WEBHOOK_URL", receiver.url)

    @notify.on
    def done() -> None:
        raise SystemExit(0)

    @notify.on
    def failed() -> None:
        raise SystemExit(3)

    with pytest.raises(SystemExit) as caught:
        done()
    assert caught.value.code == 0
    assert [p["event"] for p in receiver.wait_for(2)] == ["start", "complete"]
    with pytest.raises(SystemExit) as caught:
        failed()
    assert caught.value.code == 3
    assert [p["event"] for p in receiver.wait_for(4)][2:] == ["start", "failure"]


def test_a_hanging_receiver_delays_the_job_at_most_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hung = Receiver("hang")
    try:

        @notify.on(webhook_url=hung.url, timeout=0.5)
        def quick() -> str:
            return "result"

        began = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="forgeml.notify"):
            assert quick() == "result"
        took = time.monotonic() - began
        # The job gave up on the post after its timeout: it says so, and it did not wait
        # for the receiver (which holds the request for 30 s).
        assert "a notification was still being posted after 0.5 s" in caplog.text
        assert took < 0.5 + 10, f"the job took {took:.2f} s with a 0.5 s notification timeout"
        assert hung.wait_for(1)[0]["event"] == "start"
    finally:
        hung.close()


def test_a_500_is_logged_and_the_outcome_is_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    failing = Receiver("500")
    try:

        @notify.on(webhook_url=failing.url, timeout=2)
        def job() -> int:
            return 7

        with caplog.at_level(logging.WARNING, logger="forgeml.notify"):
            assert job() == 7
        assert len(failing.wait_for(2)) == 2
        assert "HTTP 500" in caplog.text
        assert "internal error" in caplog.text
        assert "127.0.0.1" in caplog.text
        assert "T0K3N" not in caplog.text  # the URL's path may be a credential
    finally:
        failing.close()


def test_nothing_listens_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    closed = Receiver()
    closed.close()  # the port is free again: connections are refused

    @notify.on(webhook_url=closed.url, timeout=1)
    def job() -> str:
        return "ok"

    with caplog.at_level(logging.WARNING, logger="forgeml.notify"):
        assert job() == "ok"
    assert "could not post the 'complete' notification" in caplog.text


SCRIPT = """
import sys, time
from forgeml import app, notify

@notify.on(timeout=1.0)
def main(*, fail: bool = False):
    if fail:
        raise RuntimeError("boom")
    return {"accuracy": 1.0}

began = time.monotonic()
try:
    app.run(main)
finally:
    print(f"elapsed {time.monotonic() - began:.3f}", file=sys.stderr)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["hang", "500"])
def test_exit_codes_stay_the_same_under_app_run(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT), encoding="utf-8")
    bad = Receiver(mode)
    env = {**os.environ, "FORGEML_WEBHOOK_URL": bad.url, "PYTHONUNBUFFERED": "1"}
    for name in ("RANK", "SLURM_PROCID", "SLACK_WEBHOOK_URL", "FORGEML_NOTIFY_TIMEOUT"):
        env.pop(name, None)
    try:
        for args, code in (([], 0), (["--fail"], 1)):
            done = subprocess.run(
                [sys.executable, str(script), *args],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == code, done.stderr
            elapsed = float(re.findall(r"elapsed ([0-9.]+)", done.stderr)[-1])
            assert elapsed < 1.0 + 15, done.stderr  # the hanging receiver holds posts 30 s
            if mode == "hang":
                assert "still being posted after 1.0 s" in done.stderr
            if mode == "500":
                assert "HTTP 500" in done.stderr
            if code:
                assert "RuntimeError: boom" in done.stderr
        events = [p["event"] for p in bad.wait_for(2)]
        assert events[0] == "start"
    finally:
        bad.close()


def test_only_rank_zero_posts(
    receiver: Receiver, started_posts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    @notify.on(webhook_url=receiver.url)
    def main(cfg: Config) -> str:
        return "done"

    monkeypatch.setenv("RANK", "1")
    assert main(Config(rank=0)) == "done"  # $RANK comes first
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert main(Config(rank=0)) == "done"  # then $SLURM_PROCID
    monkeypatch.delenv("SLURM_PROCID")
    assert main(Config(rank=2)) == "done"  # then the config's rank
    assert started_posts == []  # no post was started, so none can arrive later
    assert receiver.posts == []
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert main(Config(rank=2)) == "done"  # the environment says rank 0: it wins
    assert [p["event"] for p in receiver.wait_for(2)] == ["start", "complete"]
    assert notify.is_rank_zero()
    monkeypatch.delenv("SLURM_PROCID")
    assert notify.is_rank_zero({"rank": 0})
    assert not notify.is_rank_zero({"rank": 1})


def test_slack_messages_go_through_slack_sdk(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.url)  # a Slack URL: Slack messages

    @notify.on(job="train")
    def train(lr: float = 0.1) -> dict[str, float]:
        return {"accuracy": 0.5}

    @notify.on(webhook_url=receiver.url, kind="slack", job="crash", start=False)
    def crash() -> None:
        raise KeyError("weights")

    train()
    with pytest.raises(KeyError):
        crash()
    start, done, failed = receiver.wait_for(3)
    for message in (start, done, failed):
        assert set(message) == {"text", "blocks"}
    assert all("slackclient" in h["User-Agent"] for h in receiver.headers)
    assert start["text"].startswith(":rocket: train started")
    assert '"lr": 0.1' in start["blocks"][1]["text"]["text"]
    assert done["text"].startswith(":white_check_mark: train finished in")
    assert "accuracy" in json.dumps(done["blocks"])
    assert failed["text"].startswith(":x: crash failed after")
    assert "KeyError: 'weights'" in failed["blocks"][1]["text"]["text"]


def test_config_supplies_url_and_timeout(receiver: Receiver) -> None:
    @notify.on
    def main(cfg: Config) -> int:
        return 1

    assert main(Config(notify={"webhook_url": receiver.url, "timeout": 2})) == 1
    assert [p["event"] for p in receiver.wait_for(2)] == ["start", "complete"]
    assert receiver.posts[0]["args"]["cfg"]["notify"]["timeout"] == 2


def test_without_a_url_the_job_runs_and_one_warning_says_why(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forgeml.notify import _decorator

    monkeypatch.setattr(_decorator, "_warned_no_url", False)

    @notify.on
    def job() -> int:
        return 5

    with caplog.at_level(logging.WARNING, logger="forgeml.notify"):
        assert job() == 5
        assert job() == 5
    assert caplog.text.count("notifications are off") == 1
    assert "FORGEML_WEBHOOK_URL" in caplog.text


def test_a_bad_url_from_the_environment_does_not_stop_the_job(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGEML_WEBHOOK_URL", "file:///etc/passwd")

    @notify.on
    def job() -> int:
        return 5

    with caplog.at_level(logging.WARNING, logger="forgeml.notify"):
        assert job() == 5
    assert "must be an http:// or https:// URL" in caplog.text


def test_bad_arguments_fail_at_decoration() -> None:
    with pytest.raises(NotifyError, match="http:// or https://"):
        notify.on(webhook_url="ftp://example.com/hook")
    with pytest.raises(
        NotifyError, match=r"kind= must be one of auto, slack, webhook\. Got 'teams'"
    ):
        notify.on(kind="teams")  # type: ignore[arg-type]
    with pytest.raises(NotifyError, match=r"seconds > 0\. Got 0"):
        notify.on(timeout=0)

    async def fetch() -> None:
        pass

    with pytest.raises(NotifyError, match="is async"):
        notify.on(fetch)


def test_wraps_keeps_the_signature_for_app_run_options() -> None:
    from forgeml.argparse import parser_for

    @notify.on(webhook_url="http://127.0.0.1:9/unused")
    def train(*, lr: float = 0.001, epochs: int = 1) -> None:
        """Train a model.

        Args:
            lr: learning rate
        """

    assert train.__name__ == "train"
    assert train.__wrapped__ is not None
    cfg = parser_for(train).parse_args(["--lr", "0.5"])
    assert cfg.lr == 0.5
    assert cfg.epochs == 1
    assert "learning rate" in parser_for(train).format_help()


def test_secrets_are_masked_and_values_truncated(receiver: Receiver) -> None:
    from forgeml import secrets

    secrets.add_mask("hunter2-very-secret")

    @notify.on(webhook_url=receiver.url)
    def login(password: str, blob: str) -> None:
        raise PermissionError(f"wrong password {password!r}")

    with pytest.raises(PermissionError):
        login("hunter2-very-secret", "x" * 100_000)
    start, failed = receiver.wait_for(2)
    text = json.dumps(receiver.posts)
    assert "hunter2-very-secret" not in text
    assert start["args"]["password"] == "***"
    assert len(start["args"]["blob"]) <= 1000
    assert "wrong password '***'" in failed["traceback"]
    assert failed["error"] == "PermissionError: wrong password '***'"


def test_slack_message_shape() -> None:
    payload = {
        "event": "failure",
        "job": "train",
        "host": "node1",
        "rank": 0,
        "args": {},
        "result": None,
        "metrics": {},
        "error": "ValueError: <bad> & ```",
        "traceback": "Traceback ...\n" + "x" * 10_000,
        "duration": 75.0,
    }
    message = notify.slack_message(payload)
    assert message["text"] == ":x: train failed after 1:15 on node1"
    texts = [b["text"]["text"] for b in message["blocks"]]
    assert all(len(t) <= 3000 for t in texts)
    assert "&lt;bad&gt; &amp;" in texts[1]
