"""`python -m tests.conformance --plugin-repo PATH --release 2.4.71 [--release 2.3 ...] [--json]`

Checks each release in its own fresh WordPress and prints the per-release table (or JSON with
--json) on stdout; progress goes to stderr. Exit 0 when every check of every release holds,
1 when any fails, 2 for a usage error (no mirror, unknown release, not root).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from tests.conformance.packages import ensure_packages
from tests.conformance.plugin import known_releases
from tests.conformance.release import Options, check_release
from tests.conformance.report import render_json, render_table
from tests.conformance.services import ServiceError

DEFAULT_RELEASES = ("2.4.71", "2.3", "2.2", "1.9.16")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.conformance",
        description="Run batchgpt and its emulator against real releases of the AI Power / "
        "AIPKit chat plugin in a fresh local WordPress.",
    )
    parser.add_argument(
        "--plugin-repo",
        type=Path,
        default=os.environ.get("BATCHGPT_PLUGIN_REPO"),
        help="git mirror of the plugin's release history, one commit per release "
        "(github:WordPressBugBounty/plugins-gpt3-ai-content-generator) [env BATCHGPT_PLUGIN_REPO]",
    )
    parser.add_argument(
        "--release",
        action="append",
        dest="releases",
        metavar="VERSION",
        help=f"a release to check; repeatable [default: {' '.join(DEFAULT_RELEASES)}]",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--captures",
        type=Path,
        default=os.environ.get("BATCHGPT_CONFORMANCE_CAPTURES"),
        help="also write raw wire captures to DIR/<release>/ [env BATCHGPT_CONFORMANCE_CAPTURES]",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep each release's temporary folder (logs, databases) for debugging",
    )
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.plugin_repo or not args.plugin_repo.exists():
        print(
            "conformance: --plugin-repo (or BATCHGPT_PLUGIN_REPO) must name the plugin's "
            "release mirror",
            file=sys.stderr,
        )
        return 2
    releases = args.releases or list(DEFAULT_RELEASES)
    available = set(known_releases(args.plugin_repo))
    unknown = [r for r in releases if r not in available]
    if unknown:
        print(f"conformance: not in {args.plugin_repo}: {' '.join(unknown)}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print(
            "conformance: needs root (MariaDB and Apache run as their own users; apt-get)",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    try:
        installed = ensure_packages(Path(tempfile.gettempdir()) / "batchgpt-conformance-apt.log")
    except ServiceError as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 2
    if installed:
        print(f"conformance: installed {' '.join(installed)}", file=sys.stderr)
    options = Options(repo=args.plugin_repo.resolve(), captures=args.captures, keep=args.keep)
    reports = []
    try:
        for release in releases:
            print(f"conformance: checking {release}", file=sys.stderr, flush=True)
            reports.append(check_release(release, options))
            print(f"conformance: {release} done in {reports[-1].seconds:.0f} s", file=sys.stderr)
    except KeyboardInterrupt:
        print("conformance: interrupted; everything started was stopped", file=sys.stderr)
        return 130
    print(render_json(reports) if args.json else render_table(reports))
    return 0 if all(r.passed for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
