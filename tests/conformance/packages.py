"""The Debian packages a site needs, installed with apt-get when absent.

Installing never starts a system service: a `policy-rc.d` that refuses every start is in place
for the duration of `apt-get install` (and removed after, if this harness created it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conformance.services import ServiceError

PACKAGES = (
    "mariadb-server",
    "mariadb-client",
    "apache2",
    "libapache2-mod-php",
    "php-cli",
    "php-mysql",
    "php-curl",
    "php-mbstring",
    "php-xml",
    "wordpress",
    "wordpress-theme-twentytwentyone",
)
POLICY = Path("/usr/sbin/policy-rc.d")


def missing_packages(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """The packages dpkg does not report as installed."""
    missing = []
    for package in packages:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or "install ok installed" not in done.stdout:
            missing.append(package)
    return missing


def ensure_packages(log: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Install what is missing (needs root and apt-get); returns the packages installed."""
    missing = missing_packages(packages)
    if not missing:
        return []
    if shutil.which("apt-get") is None:
        raise ServiceError(f"missing Debian packages {' '.join(missing)} and no apt-get")
    if os.geteuid() != 0:
        raise ServiceError(f"missing Debian packages {' '.join(missing)}; run as root to install")
    made_policy = not POLICY.exists()
    if made_policy:
        POLICY.write_text("#!/bin/sh\nexit 101\n")
        POLICY.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        with log.open("ab") as out:
            for args in (
                ["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            ):
                done = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, env=env)
                if done.returncode != 0:
                    raise ServiceError(
                        f"{' '.join(args[:2])} failed ({done.returncode}); see {log}"
                    )
    finally:
        if made_policy:
            POLICY.unlink(missing_ok=True)
    return missing
