"""Posting one notification: where to (URL and kind), what (payload), and the bounded POST."""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Literal

from forgeml._core._errors import NotifyError
from forgeml._core._format import format_duration
from forgeml._version import __version__
from forgeml.secrets import mask, mask_tree

log = logging.getLogger("forgeml.notify")

Kind = Literal["auto", "slack", "webhook"]
KINDS = ("auto", "slack", "webhook")
EVENTS = ("start", "complete", "failure")

#: Seconds a post may take, unless ``timeout=``, ``$FORGEML_NOTIFY_TIMEOUT`` or the config says.
DEFAULT_TIMEOUT = 5.0
#: Environment variables read for the webhook URL, in order (the second means Slack).
URL_VARS = ("FORGEML_WEBHOOK_URL", "SLACK_WEBHOOK_URL")
TIMEOUT_VAR = "FORGEML_NOTIFY_TIMEOUT"

_TEXT_LIMIT = 1000  # characters of one argument, result or value
_TRACEBACK_LIMIT = 4000  # the last characters of a traceback
_ITEMS_LIMIT = 50  # entries of a dict or list
_DEPTH_LIMIT = 4
_SLACK_LIMIT = 2900  # Slack refuses section texts over 3000 characters


def check_url(url: str, origin: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise NotifyError(
            f"The webhook URL from {origin} must be an http:// or https:// URL. "
            f"Got {redact_url(url)!r}."
        )
    return url


def check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise NotifyError(f"kind= must be one of {', '.join(KINDS)}. Got {kind!r}.")
    return kind  # type: ignore[return-value]


def check_timeout(timeout: Any, origin: str) -> float:
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        value = math.nan
    if not (value > 0 and math.isfinite(value)) or isinstance(timeout, bool):
        raise NotifyError(
            f"The notification timeout from {origin} must be seconds > 0. Got {timeout!r}."
        )
    return value


def redact_url(url: str) -> str:
    """``scheme://host[:port]``: webhook paths and queries often hold tokens."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return (
        f"{parts.scheme}://{host}{port}/..."
        if parts.path not in ("", "/")
        else f"{parts.scheme}://{host}{port}"
    )


def resolve_target(
    webhook_url: str | None, kind: Kind, cfg: Mapping[str, Any] | None
) -> tuple[str, Kind] | None:
    """Where to post: the argument, else ``$FORGEML_WEBHOOK_URL``/``$SLACK_WEBHOOK_URL``,
    else the config's ``notify.webhook_url``; None when none is set."""
    url, origin = webhook_url, "webhook_url="
    if not url:
        for var in URL_VARS:
            if os.environ.get(var):
                url, origin = os.environ[var], f"${var}"
                break
    if not url:
        section = cfg.get("notify") if cfg is not None else None
        if isinstance(section, Mapping) and section.get("webhook_url"):
            url, origin = str(section["webhook_url"]), "the config's notify.webhook_url"
    if not url:
        return None
    check_url(url, origin)
    if kind == "auto":
        host = urllib.parse.urlsplit(url).hostname or ""
        slack = origin == "$SLACK_WEBHOOK_URL" or host == "hooks.slack.com"
        kind = "slack" if slack else "webhook"
    return url, kind


def resolve_timeout(timeout: float | None, cfg: Mapping[str, Any] | None) -> float:
    if timeout is not None:
        return check_timeout(timeout, "timeout=")
    if os.environ.get(TIMEOUT_VAR):
        return check_timeout(os.environ[TIMEOUT_VAR], f"${TIMEOUT_VAR}")
    section = cfg.get("notify") if cfg is not None else None
    if isinstance(section, Mapping) and section.get("timeout") is not None:
        return check_timeout(section["timeout"], "the config's notify.timeout")
    return DEFAULT_TIMEOUT


# ----------------------------------------------------------------------------- payloads


def jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe, size-bounded copy of ``value`` (other objects become their repr)."""
    if value is None or isinstance(value, bool | int | str):
        return _clip(value) if isinstance(value, str) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return jsonable(float(value))
    if depth < _DEPTH_LIMIT and isinstance(value, Mapping):
        items = list(value.items())
        out = {str(k): jsonable(v, depth + 1) for k, v in items[:_ITEMS_LIMIT]}
        if len(items) > _ITEMS_LIMIT:
            out["..."] = f"{len(items) - _ITEMS_LIMIT} more"
        return out
    if depth < _DEPTH_LIMIT and isinstance(value, list | tuple):
        out_list = [jsonable(v, depth + 1) for v in value[:_ITEMS_LIMIT]]
        if len(value) > _ITEMS_LIMIT:
            out_list.append(f"... {len(value) - _ITEMS_LIMIT} more")
        return out_list
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return _clip(text)


def _clip(text: str, limit: int = _TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clip_traceback(text: str) -> str:
    """The end of a traceback (where the error is), at most a few thousand characters."""
    if len(text) <= _TRACEBACK_LIMIT:
        return text
    return "…" + text[-(_TRACEBACK_LIMIT - 1) :]


def numeric_metrics(value: Any) -> dict[str, float]:
    """The numbers among a mapping's top-level values (a result like ``{"acc": 0.9}``)."""
    if not isinstance(value, Mapping):
        return {}
    found: dict[str, float] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            continue
        if isinstance(item, numbers.Real):
            number = float(item)
            if math.isfinite(number):
                found[str(key)] = int(item) if isinstance(item, numbers.Integral) else number
    return found


def finish_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """Mask every string of a payload (secrets never leave the process)."""
    masked: dict[str, Any] = mask_tree(payload)
    return masked


# ----------------------------------------------------------------------------- Slack

_EMOJI = {"start": ":rocket:", "complete": ":white_check_mark:", "failure": ":x:"}
_VERB = {"start": "started", "complete": "finished", "failure": "failed"}


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    body = _escape(text).replace("```", "`\u200b``")
    if len(body) > _SLACK_LIMIT:
        body = "…" + body[-(_SLACK_LIMIT - 1) :]
    return f"```{body}```"


def slack_message(payload: dict[str, Any]) -> dict[str, Any]:
    """Slack ``text`` (the notification's fallback) and ``blocks`` for a payload."""
    event = payload["event"]
    seconds = payload.get("duration")
    took = format_duration(seconds) if seconds is not None else ""
    after = f" after {took}" if event == "failure" and took else f" in {took}" if took else ""
    where = f"{payload['host']}" + (f", rank {payload['rank']}" if payload.get("rank") else "")
    text = f"{_EMOJI[event]} {payload['job']} {_VERB[event]}{after} on {where}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _escape(
                    f"{_EMOJI[event]} *{payload['job']}* {_VERB[event]}{after} on `{where}`"
                ),
            },
        }
    ]

    def section(title: str, body: str) -> None:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*\n{body}"}})

    if event == "start" and payload.get("args"):
        section("Arguments", _code(json.dumps(payload["args"], indent=1, ensure_ascii=False)))
    if event == "complete":
        if payload.get("metrics"):
            lines = "\n".join(f"• {k}: `{v:g}`" for k, v in payload["metrics"].items())
            section("Metrics", _escape(lines)[:_SLACK_LIMIT])
        if payload.get("result") is not None:
            section("Result", _code(json.dumps(payload["result"], indent=1, ensure_ascii=False)))
    if event == "failure":
        if payload.get("error"):
            section("Error", _code(str(payload["error"])))
        if payload.get("traceback"):
            section("Traceback", _code(str(payload["traceback"])))
    return {"text": text, "blocks": blocks}


# ----------------------------------------------------------------------------- transport


def post(payload: dict[str, Any], url: str, kind: Kind, timeout: float) -> bool:
    """POST one notification; True when the receiver answered 2xx. Never raises.

    Slack URLs go through ``slack_sdk``'s ``WebhookClient`` (when installed),
    others get the payload as JSON. A failure is logged (the URL's path, which
    may hold a token, is left out) and ends there.
    """
    event = payload.get("event", "?")
    where = redact_url(url)
    try:
        if kind == "slack":
            status, body = _post_slack(slack_message(payload), url, timeout)
        else:
            status, body = _post_json(payload, url, timeout)
    except Exception as exc:
        reason = getattr(exc, "reason", None) or exc
        log.warning(
            "could not post the '%s' notification to %s: %s",
            event,
            where,
            mask(
                f"{type(reason).__name__}: {reason}"
                if isinstance(reason, BaseException)
                else str(reason)
            ),
        )
        return False
    if 200 <= status < 300:
        log.debug("posted the '%s' notification to %s", event, where)
        return True
    log.warning(
        "could not post the '%s' notification to %s: HTTP %d %s",
        event,
        where,
        status,
        mask(_clip(body.strip(), 200)),
    )
    return False


def _post_json(message: dict[str, Any], url: str, timeout: float) -> tuple[int, str]:
    data = json.dumps(message, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"forgeml/{__version__}",
        },
    )
    try:
        with urllib.request.urlopen(
            request, timeout=timeout
        ) as response:  # http(s) only: check_url
            return int(response.status), response.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(4096).decode("utf-8", "replace")
        except Exception:
            body = ""
        return int(exc.code), body or str(exc.reason)


def _post_slack(message: dict[str, Any], url: str, timeout: float) -> tuple[int, str]:
    try:
        from slack_sdk.webhook import WebhookClient
    except ImportError:  # the same request, without the SDK
        return _post_json(message, url, timeout)
    silent = logging.Logger("forgeml.notify.slack_sdk", level=logging.CRITICAL + 1)
    client = WebhookClient(
        url,
        timeout=timeout,  # type: ignore[arg-type]  # urllib takes float seconds
        logger=silent,  # its debug log would print the URL, a credential
        retry_handlers=[],  # one bounded attempt
    )
    host = urllib.parse.urlsplit(url).hostname
    if host and urllib.request.proxy_bypass(host):  # slack_sdk reads *_proxy but not no_proxy
        client.proxy = None
    response = client.send(text=message["text"], blocks=message["blocks"])
    return int(response.status_code), str(response.body or "")
