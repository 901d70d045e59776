"""Startup cost of forgeml, measured against a bare interpreter in the same run.

Each command runs in repeated fresh subprocesses (``sys.executable``); the
median and minimum wall times are reported. Headline figures, one JSON line each:

- ``import_forgeml``: ``python -c "import forgeml"``, target under 150 ms.
- ``cli_help``: ``forgeml --help`` (the console script next to
  ``sys.executable``, else ``python -c "from forgeml.cli import main; main()"``),
  target under 300 ms.
- ``import_forgeml_frameworks``: which ML frameworks ``import forgeml`` pulls
  in; the target is none.

The baseline is ``python -c pass``; ``ratio`` is baseline ÷ ours (higher is
better) and ``added_ms`` is what forgeml adds on top of the interpreter.

Run with ``python benchmarks/startup.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

FRAMEWORKS = ("torch", "tensorflow", "keras", "sklearn", "xgboost", "onnxruntime", "jax")
FRAMEWORK_PROBE = (
    f"import forgeml, sys; print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
)


class CommandFailed(Exception):
    """A benchmarked command exited non-zero or could not start."""


def run_once(cmd: list[str]) -> tuple[float, str]:
    """Run ``cmd`` once; return (wall time in ms, stdout)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise CommandFailed(f"{cmd[0]}: {exc}") from exc
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise CommandFailed(f"exit code {proc.returncode}: {tail[0]}")
    return elapsed, proc.stdout


def time_command(cmd: list[str], runs: int) -> dict[str, float]:
    """Median and minimum wall time of ``cmd`` over ``runs`` fresh processes."""
    run_once(cmd)  # warm the OS file cache; not counted
    times = [run_once(cmd)[0] for _ in range(runs)]
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def cli_command() -> list[str]:
    """The ``forgeml --help`` command: console script if installed, else -c."""
    script = Path(sys.executable).parent / "forgeml"
    if script.is_file():
        return [str(script), "--help"]
    return [sys.executable, "-c", "from forgeml.cli import main; main()", "--help"]


def headline(
    name: str, cmd: list[str], target_ms: float, base: dict[str, float], runs: int
) -> dict[str, object]:
    """One JSON record comparing ``cmd`` against the baseline timings."""
    record: dict[str, object] = {
        "name": name,
        "target": f"<{target_ms:g} ms",
        "target_ms": target_ms,
        "baseline_ms": round(base["median_ms"], 1),
        "baseline_min_ms": round(base["min_ms"], 1),
        "runs": runs,
        "command": cmd,
    }
    try:
        ours = time_command(cmd, runs)
    except CommandFailed as exc:
        return {**record, "ratio": 0.0, "within_target": False, "error": str(exc)}
    return {
        **record,
        "ratio": round(base["median_ms"] / ours["median_ms"], 3),
        "ours_ms": round(ours["median_ms"], 1),
        "ours_min_ms": round(ours["min_ms"], 1),
        "added_ms": round(ours["median_ms"] - base["median_ms"], 1),
        "within_target": ours["median_ms"] < target_ms,
    }


def frameworks_record() -> dict[str, object]:
    """Which ML frameworks ``import forgeml`` imports (the target is none)."""
    record: dict[str, object] = {"name": "import_forgeml_frameworks", "target": []}
    try:
        _, out = run_once([sys.executable, "-c", FRAMEWORK_PROBE])
    except CommandFailed as exc:
        return {**record, "ratio": 0.0, "error": str(exc)}
    imported = ast.literal_eval(out.strip())
    return {**record, "ratio": 0.0 if imported else 1.0, "imported": imported}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per command")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be a positive integer. Got {args.runs}.")

    try:
        base = time_command([sys.executable, "-c", "pass"], args.runs)
    except CommandFailed as exc:
        print(json.dumps({"name": "baseline", "error": str(exc)}))
        return 1
    records = [
        headline(
            "import_forgeml",
            [sys.executable, "-c", "import forgeml"],
            150,
            base,
            args.runs,
        ),
        headline("cli_help", cli_command(), 300, base, args.runs),
        frameworks_record(),
    ]
    for record in records:
        print(json.dumps(record))
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
