"""Slurm submission and status: a sweep as one job array against one sbatch call per set.

Headline figures, one JSON line each, measured on the local cluster
(``scripts/slurm-local``; started here in a temp dir when ``SLURM_CONF`` names no running
cluster, which needs root and Debian's slurm-wlm and munge; otherwise the script says why
it skips and exits 0):

- ``jobs_submit_sweep``: submitting a 100-set argument sweep with ``forgeml.jobs.launch``
  (one script, one ``sbatch`` call: a job array) against 100 ``sbatch`` calls, one per set
  (each with its own script, written the same way). ``ratio`` is the 100 calls' time ÷
  ours, target at least 10. Jobs are submitted held (``--hold``) so that nothing runs,
  and cancelled after each run.
- ``jobs_status_100``: the state of the 100 tasks of that array with
  ``forgeml.jobs.status`` (one ``squeue`` call) against one ``squeue -j`` call per task.
  ``ratio`` is the per-task calls' time ÷ ours, target at least 20.

Both sides run alternately, ``--runs`` times each; ``ratio`` compares the best runs (the
least disturbed on a shared machine), medians are printed too.
Run with ``python benchmarks/jobs.py [--runs N] [--sets N] [--only NAME ...]``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _bench import Benchmarks, Record, ms, timed

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-local"


@dataclass
class Context:
    runs: int
    sets: int
    workdir: Path


BENCHMARKS: Benchmarks[Context] = Benchmarks()


def _cancel(job_ids: list[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], check=False, capture_output=True)


def _sweep(n: int) -> list[list[str]]:
    return [[f"lr={10 ** -(1 + i % 5)}", f"seed={i}"] for i in range(n)]


def _compare(ours: list[float], theirs: list[float]) -> dict[str, Any]:
    return {
        "ours_ms": ms(min(ours)),
        "baseline_ms": ms(min(theirs)),
        "ours_median_ms": ms(statistics.median(ours)),
        "baseline_median_ms": ms(statistics.median(theirs)),
        "ratio": round(min(theirs) / min(ours), 2),
    }


@BENCHMARKS("jobs_submit_sweep")
def submit_sweep(ctx: Context) -> Record:
    from forgeml import jobs

    command = [sys.executable, "train.py", "--cfg", "app.yml"]
    sets = _sweep(ctx.sets)
    ours: list[float] = []
    theirs: list[float] = []
    submitted: list[str] = []
    for run in range(ctx.runs):

        def array() -> None:
            job = jobs.launch(
                command, overrides=sets, name="bench", sbatch_args=["--hold"], secrets=False
            )
            submitted.append(job.id)

        def one_by_one(run: int = run) -> None:
            folder = ctx.workdir / f"single-{run}"
            folder.mkdir()
            for i, words in enumerate(sets):
                script = folder / f"job{i}.sh"
                script.write_text(
                    "#!/bin/bash\n#SBATCH --job-name=bench\n"
                    f"#SBATCH --output={folder}/%j.out\n"
                    f"exec {shlex.join([*command, *words])}\n"
                )
                done = subprocess.run(
                    ["sbatch", "--parsable", "--hold", str(script)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                submitted.append(done.stdout.strip())

        try:
            ours.append(timed(array))
            theirs.append(timed(one_by_one))
        finally:
            _cancel(submitted)
            submitted.clear()
    return {
        "name": "jobs_submit_sweep",
        "sets": ctx.sets,
        **_compare(ours, theirs),
        "target": 10.0,
        "what": f"{ctx.sets}-set sweep: one array (forgeml.jobs.launch) vs {ctx.sets} sbatch calls",
    }


@BENCHMARKS("jobs_status_100")
def status_refresh(ctx: Context) -> Record:
    from forgeml import jobs

    job = jobs.launch(
        ["true"], overrides=_sweep(ctx.sets), name="bench", sbatch_args=["--hold"], secrets=False
    )
    try:
        found = jobs.status(job)
        assert len(found) == ctx.sets, f"expected {ctx.sets} tasks, got {len(found)}"
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(ctx.runs):
            ours.append(timed(lambda: jobs.status(job)))

            def per_task() -> None:
                for key in job.task_keys():
                    subprocess.run(
                        ["squeue", "-h", "-j", key, "-o", "%T"],
                        capture_output=True,
                        text=True,
                        check=True,
                    )

            theirs.append(timed(per_task))
    finally:
        _cancel([job.id])
    return {
        "name": "jobs_status_100",
        "tasks": ctx.sets,
        **_compare(ours, theirs),
        "target": 20.0,
        "what": f"state of {ctx.sets} array tasks: one squeue call vs one per task",
    }


def _cluster_running() -> bool:
    if not os.environ.get("SLURM_CONF") or shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, check=False)
    return done.returncode == 0


@contextmanager
def cluster() -> Iterator[str | None]:
    """A running cluster (the one SLURM_CONF names, else a local one); None and why not."""
    if _cluster_running():
        yield None
        return
    missing = [t for t in ("slurmctld", "slurmd", "munged") if not Path(f"/usr/sbin/{t}").exists()]
    if missing or os.geteuid() != 0:
        why = f"missing {', '.join(missing)}" if missing else "not root"
        yield f"no Slurm cluster ({why}): run 'make slurm' as root, or set SLURM_CONF"
        return
    state = Path(tempfile.mkdtemp(prefix="forgeml-slurm-bench-"))
    state.chmod(0o755)
    env = {**os.environ, "FORGEML_SLURM_DIR": str(state)}
    try:
        subprocess.run([str(SCRIPT), "start"], env=env, check=True, capture_output=True)
        os.environ["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
        yield None
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, check=False, capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = BENCHMARKS.parser(__doc__, runs=3)
    parser.add_argument("--sets", type=int, default=100, help="argument sets (array tasks)")
    args = parser.parse_args(argv)
    selected = BENCHMARKS.selected(parser, args, "sets")
    with cluster() as skipped:
        if skipped:
            print(f"benchmarks/jobs.py: skipped: {skipped}", file=sys.stderr)
            return 0
        with tempfile.TemporaryDirectory(prefix="forgeml-bench-") as tmp:
            os.environ["FORGEML_HOME"] = str(Path(tmp) / "home")
            make: Callable[[Path], Context] = lambda workdir: Context(  # noqa: E731
                runs=args.runs, sets=args.sets, workdir=workdir
            )
            return BENCHMARKS.run(selected, Path(tmp), make)


if __name__ == "__main__":
    sys.exit(main())
