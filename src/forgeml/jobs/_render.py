"""The same launch for Kubernetes (a Job, an Indexed Job for arrays) and for Apptainer."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from forgeml._core._errors import JobsError

_K8S_NAME = re.compile(r"[^a-z0-9-]+")


def k8s_name(name: str) -> str:
    """``name`` as a Kubernetes object name (lowercase letters, digits, '-'; 63 characters)."""
    cleaned = _K8S_NAME.sub("-", name.lower()).strip("-")[:63].strip("-")
    return cleaned or "forgeml-job"


def k8s_quantity(mem: str) -> str:
    """A Slurm memory size as a Kubernetes quantity: ``32G`` -> ``32Gi``, ``500M`` -> ``500Mi``,
    and a bare number, which Slurm reads as megabytes, ``4000`` -> ``4000Mi``."""
    match = re.fullmatch(r"(\d+)([KMGT]?)B?", str(mem).strip().upper())
    if not match:
        raise JobsError(
            f"Memory must be a Slurm size: a number of megabytes or a number with K, M, G or T "
            f"(32G, 500M, 4000). Got {mem!r}."
        )
    number, unit = match.groups()
    return f"{number}{unit or 'M'}i"


_UNLIMITED = ("UNLIMITED", "INFINITE")
_TIME_PATTERN = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def _seconds(limit: str) -> int | None:
    """A Slurm time limit (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in seconds;
    None for ``UNLIMITED``/``INFINITE``; JobsError for anything else."""
    text = str(limit).strip()
    if text.upper() in _UNLIMITED:
        return None
    if not _TIME_PATTERN.fullmatch(text):
        raise JobsError(
            f"--time must be a Slurm time limit: MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM, "
            f"D-HH:MM:SS or UNLIMITED. Got {limit!r}."
        )
    days = 0
    if "-" in text:
        head, text = text.split("-", 1)
        days = int(head)
        parts = [int(p) for p in text.split(":")]
        parts += [0] * (3 - len(parts))
        hours, minutes, seconds = parts
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def render_k8s(
    command: Sequence[str],
    *,
    image: str,
    overrides: Sequence[Sequence[str]] | None = None,
    name: str = "forgeml-job",
    time: str | None = None,
    gpus: int | None = None,
    cpus_per_task: int | None = None,
    mem: str | None = None,
    array_parallelism: int | None = None,
    requeue: bool = False,
    max_restarts: int = 3,
    env: Mapping[str, str] | None = None,
    secret: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A ``batch/v1`` Job running ``command`` in ``image``; an Indexed Job (one index per
    argument set, ``JOB_COMPLETION_INDEX`` picking it) when ``overrides`` is given.

    Secrets come from the Kubernetes Secret ``secret`` (``envFrom``), never the manifest;
    ``requeue`` becomes ``backoffLimit: max_restarts`` (else 0).
    """
    words = [str(c) for c in command]
    if not words:
        raise JobsError("The command to render is empty.")
    if not image:
        raise JobsError("A Kubernetes Job needs a container image: pass --image IMAGE.")
    sets = [[str(o) for o in s] for s in overrides] if overrides else []
    container: dict[str, Any] = {"name": "main", "image": image}
    if sets:
        cases = "\n".join(f"  {i}) exec {shlex.join([*words, *s])} ;;" for i, s in enumerate(sets))
        script = (
            f'case "$JOB_COMPLETION_INDEX" in\n{cases}\n'
            f'  *) echo "no argument set for index $JOB_COMPLETION_INDEX" >&2; exit 2 ;;\nesac\n'
        )
        container["command"] = ["/bin/bash", "-c", script]
    else:
        container["command"] = words
    if env:
        container["env"] = [{"name": str(k), "value": str(v)} for k, v in env.items()]
    if secret:
        container["envFrom"] = [{"secretRef": {"name": k8s_name(secret)}}]
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    if gpus:
        limits["nvidia.com/gpu"] = int(gpus)
    if cpus_per_task:
        requests["cpu"] = str(int(cpus_per_task))
    if mem and str(mem) != "0":
        requests["memory"] = limits["memory"] = k8s_quantity(str(mem))
    if limits or requests:
        container["resources"] = {
            k: v for k, v in (("limits", limits), ("requests", requests)) if v
        }
    spec: dict[str, Any] = {
        "backoffLimit": int(max_restarts) if requeue else 0,
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/managed-by": "forgeml"}},
            "spec": {"restartPolicy": "Never", "containers": [container]},
        },
    }
    deadline = None if time in (None, "", "0") else _seconds(str(time))
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    if sets:
        spec.update(
            completionMode="Indexed",
            completions=len(sets),
            parallelism=int(array_parallelism or len(sets)),
        )
    metadata: dict[str, Any] = {
        "name": k8s_name(name),
        "labels": {"app.kubernetes.io/managed-by": "forgeml"},
    }
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def render_apptainer(
    command: Sequence[str],
    *,
    image: str,
    overrides: Sequence[Sequence[str]] | None = None,
    gpus: int | None = None,
    binds: Sequence[str] = (),
) -> list[list[str]]:
    """One ``apptainer exec`` argument list per task (per argument set, else one).

    ``--nv`` with GPUs, ``--bind`` for each of ``binds``. Apptainer passes the caller's
    environment through (secrets included), so no value is written into the commands.
    """
    words = [str(c) for c in command]
    if not words:
        raise JobsError("The command to render is empty.")
    if not image:
        raise JobsError(
            "Apptainer needs an image (a .sif file or docker://...): pass --image IMAGE."
        )
    base = ["apptainer", "exec"]
    if gpus:
        base.append("--nv")
    for bind in binds:
        base += ["--bind", str(bind)]
    sets = [[str(o) for o in s] for s in overrides] if overrides else [[]]
    return [[*base, image, *words, *s] for s in sets]
