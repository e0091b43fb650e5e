"""Time `write_report` and measure its peak RSS on generated results files of growing size.

Generating and reporting each run in fresh interpreters started by a small driver, so each peak RSS
(getrusage, which Linux carries across fork and exec) belongs to that report alone; a flat RSS
column across sizes is what bounded memory looks like. Prints a table and writes JSON.

    /work/venv/bin/python tests/benchmarks/report_bench.py [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)


def run_one(results: Path) -> dict[str, float]:
    """In this process: import, write the report, and measure time and peak RSS."""
    import plotly.graph_objects  # loaded before the baseline, as write_report loads it
    import plotly.io  # noqa: F401

    from batchgpt.report import write_report

    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    summary = write_report([results], results.with_suffix(".html"), rate=4)
    seconds = time.perf_counter() - started
    return {
        "records": summary.records,
        "seconds": round(seconds, 2),
        "lines_per_second": round(summary.records / seconds),
        "baseline_rss_mib": round(baseline_kib / 1024, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "file_mib": round(results.stat().st_size / 2**20, 1),
        "report_mib": round(results.with_suffix(".html").stat().st_size / 2**20, 1),
    }


def generate(lines: int, path: Path) -> None:
    """Native records at 50/s with 400-character answers, about 12 % errors (tests' generator)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_report import make_results

    make_results(path, lines, seed=lines, per_second=50, response_chars=400)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--json", type=Path, default=ROOT / "bench-results" / "report_bench.json")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=2, metavar=("LINES", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(args.worker)))
        return
    if args.generate:
        generate(int(args.generate[0]), Path(args.generate[1]))
        return

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in (int(part) for part in args.sizes.split(",")):
            results = Path(scratch) / f"bench-{size}.results.jsonl"
            subprocess.run([sys.executable, __file__, "--generate", str(size), results], check=True)
            worker = [sys.executable, __file__, "--worker", str(results)]
            output = subprocess.run(worker, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(output))
            results.unlink()

    header = ("records", "seconds", "lines_per_second", "baseline_rss_mib", "peak_rss_mib")
    header += ("file_mib", "report_mib")
    print(" | ".join(f"{name:>16}" for name in header))
    for row in rows:
        print(" | ".join(f"{row[name]:>16,}" for name in header))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "machine": platform.machine()}
    args.json.write_text(json.dumps({"machine": machine, "runs": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
