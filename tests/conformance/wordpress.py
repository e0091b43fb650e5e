"""A fresh WordPress on loopback from Debian's packages: MariaDB, Apache with mod_php, WordPress.

Everything lives in one temporary folder: MariaDB's datadir and socket, Apache's config, pid file
and logs, and a private copy of /usr/share/wordpress as the document root (Debian's own
wp-config.php, which reads /etc/wordpress, is replaced by one written here). Both daemons listen on
127.0.0.1 on free ports and are stopped by the pids this module started. WordPress is installed
non-interactively by PHP CLI (`wp_install`), with pretty permalinks, the twentytwentyone theme,
WP-cron off (so the access log holds only the harness' own traffic) and external HTTP blocked
except to api.openai.com, which the must-use plugin sends to the fake upstream instead.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conformance.services import Daemon, ServiceError, free_port, port_open, run

WORDPRESS_SOURCE = Path("/usr/share/wordpress")
MODULES = Path("/usr/lib/apache2/modules")
THEME = "twentytwentyone"
RESULT_MARKER = "@@CONFORMANCE-RESULT@@"
# epoch.ms client "request line" status bytes microseconds "content type" "user agent"
ACCESS_FORMAT = (
    '%{%s}t.%{msec_frac}t %h \\"%r\\" %>s %B %D \\"%{Content-Type}o\\" \\"%{User-Agent}i\\"'
)
DB_NAME, DB_USER, DB_PASSWORD = "wordpress", "wp", "conformance"
WEB_USER = "www-data"


def _chown_tree(path: Path, user: str) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(user)
    for folder, dirs, files in os.walk(path):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid)


class MariaDB:
    """A private MariaDB server: its own datadir, socket and port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.datadir = root / "data"
        self.rundir = root / "run"
        self.socket = self.rundir / "mysqld.sock"
        self.port = free_port()
        self.daemon: Daemon | None = None

    def start(self) -> None:
        for folder in (self.datadir, self.rundir):
            folder.mkdir(parents=True, exist_ok=True)
        _chown_tree(self.root, "mysql")
        run(
            [
                "mariadb-install-db",
                "--no-defaults",
                "--user=mysql",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ]
        )
        self.daemon = Daemon(
            "mariadbd",
            [
                "/usr/sbin/mariadbd",
                "--no-defaults",
                "--user=mysql",
                f"--datadir={self.datadir}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.rundir / 'mysqld.pid'}",
                f"--log-error={self.rundir / 'mysqld.err'}",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
            ],
            self.root / "mariadbd.out",
        )
        self.daemon.start(lambda: self.socket.exists() and port_open(self.port))
        self.sql(
            f"CREATE DATABASE {DB_NAME} CHARACTER SET utf8mb4; "
            f"CREATE USER '{DB_USER}'@'%' IDENTIFIED BY '{DB_PASSWORD}'; "
            f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'%';"
        )

    def sql(self, statements: str, database: str = "") -> str:
        args = ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-N", "-B"]
        return run([*args, *([database] if database else [])], input_text=statements).stdout

    def stop(self) -> None:
        if self.daemon:
            self.daemon.stop()
            self.daemon = None


class Apache:
    """Apache with mod_php (prefork) serving `docroot` on its own port and config."""

    def __init__(self, root: Path, docroot: Path, logs: Path) -> None:
        self.root = root
        self.docroot = docroot
        self.logs = logs
        self.port = free_port()
        self.access_log = logs / "access.log"
        self.daemon: Daemon | None = None

    def config(self) -> str:
        user = f"User {WEB_USER}\nGroup {WEB_USER}\n" if os.geteuid() == 0 else ""
        modules = "\n".join(
            f"LoadModule {name}_module {MODULES / file}"
            for name, file in (
                ("mpm_prefork", "mod_mpm_prefork.so"),
                ("authz_core", "mod_authz_core.so"),
                ("dir", "mod_dir.so"),
                ("mime", "mod_mime.so"),
                ("rewrite", "mod_rewrite.so"),
                ("php", "libphp8.2.so"),
            )
        )
        return f"""ServerRoot "{self.root}"
ServerName 127.0.0.1
Listen 127.0.0.1:{self.port}
PidFile "{self.root}/httpd.pid"
DefaultRuntimeDir "{self.root}/run"
{modules}
{user}StartServers 4
MinSpareServers 2
MaxSpareServers 8
MaxRequestWorkers 24
KeepAlive On
TypesConfig /etc/mime.types
ErrorLog "{self.logs}/apache-error.log"
LogLevel warn
LogFormat "{ACCESS_FORMAT}" conformance
CustomLog "{self.access_log}" conformance
DocumentRoot "{self.docroot}"
DirectoryIndex index.php index.html
<FilesMatch "\\.php$">
    SetHandler application/x-httpd-php
</FilesMatch>
php_admin_flag log_errors on
php_admin_value error_log "{self.logs}/php-error.log"
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "{self.docroot}">
    Options FollowSymLinks
    AllowOverride None
    Require all granted
    RewriteEngine On
    RewriteBase /
    RewriteRule ^index\\.php$ - [L]
    RewriteCond %{{REQUEST_FILENAME}} !-f
    RewriteCond %{{REQUEST_FILENAME}} !-d
    RewriteRule . /index.php [L]
</Directory>
"""

    def start(self) -> None:
        (self.root / "run").mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        for name in ("php-error.log", "access.log", "apache-error.log"):
            (self.logs / name).touch()
        _chown_tree(self.logs, WEB_USER)
        conf = self.root / "httpd.conf"
        conf.write_text(self.config())
        run(["/usr/sbin/apache2", "-f", str(conf), "-t"])
        self.daemon = Daemon(
            "apache2",
            ["/usr/sbin/apache2", "-f", str(conf), "-DFOREGROUND"],
            self.root / "apache2.out",
        )
        self.daemon.start(lambda: port_open(self.port))

    def access_lines(self, start: int = 0) -> list[str]:
        """Access log lines from byte offset `start`."""
        with self.access_log.open("rb") as log:
            log.seek(start)
            return log.read().decode("utf-8", "replace").splitlines()

    def access_offset(self) -> int:
        return self.access_log.stat().st_size

    def stop(self) -> None:
        if self.daemon:
            self.daemon.stop()
            self.daemon = None


@dataclass(frozen=True)
class AccessEntry:
    """One access log line: the request line split, the status and the response content type."""

    time: float
    method: str
    target: str
    status: int
    content_type: str


_ACCESS = re.compile(r'^(\S+) \S+ "(\S+) (\S+) [^"]*" (\d{3}) \S+ \S+ "([^"]*)"')


def parse_access(lines: list[str]) -> list[AccessEntry]:
    entries = []
    for line in lines:
        if match := _ACCESS.match(line):
            entries.append(
                AccessEntry(
                    float(match[1]), match[2], match[3], int(match[4]), match[5].split(";")[0]
                )
            )
    return entries


class WordPress:
    """A fresh site under `root`: database, web server, WordPress installed, must-use plugins."""

    def __init__(self, root: Path, upstream_url: str) -> None:
        self.root = root
        self.upstream_url = upstream_url
        self.docroot = root / "www"
        self.logs = root / "logs"
        self.db = MariaDB(root / "mariadb")
        self.web = Apache(root / "apache", self.docroot, self.logs)
        self.url = f"http://127.0.0.1:{self.web.port}"
        self.events_log = self.logs / "wp-events.jsonl"
        self._scripts = 0

    @property
    def content_dir(self) -> Path:
        return self.docroot / "wp-content"

    def start(self) -> None:
        """Bring up the database, copy WordPress, write its config, install it, start Apache."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.db.start()
        shutil.copytree(WORDPRESS_SOURCE, self.docroot, symlinks=True)
        (self.docroot / "wp-config.php").unlink()
        (self.docroot / "wp-config.php").write_text(self._wp_config())
        (self.content_dir / "mu-plugins").mkdir(exist_ok=True)
        (self.content_dir / "uploads").mkdir(exist_ok=True)
        (self.root / "php").mkdir()
        _chown_tree(self.docroot, WEB_USER)
        _chown_tree(self.root / "php", WEB_USER)
        self.logs.mkdir(exist_ok=True)
        self._install()
        self.web.start()

    def stop(self) -> None:
        try:
            self.web.stop()
        finally:
            self.db.stop()

    def _wp_config(self) -> str:
        keys = "\n".join(
            f"define('{name}', '{secrets.token_hex(32)}');"
            for name in (
                "AUTH_KEY",
                "SECURE_AUTH_KEY",
                "LOGGED_IN_KEY",
                "NONCE_KEY",
                "AUTH_SALT",
                "SECURE_AUTH_SALT",
                "LOGGED_IN_SALT",
                "NONCE_SALT",
            )
        )
        return f"""<?php
define('DB_NAME', '{DB_NAME}');
define('DB_USER', '{DB_USER}');
define('DB_PASSWORD', '{DB_PASSWORD}');
define('DB_HOST', '127.0.0.1:{self.db.port}');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
{keys}
$table_prefix = 'wp_';
define('WP_HOME', '{self.url}');
define('WP_SITEURL', '{self.url}');
define('WP_DEBUG', false);
define('DISABLE_WP_CRON', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_AUTO_UPDATE_CORE', false);
define('FS_METHOD', 'direct');
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('WP_ACCESSIBLE_HOSTS', 'api.openai.com');
define('BATCHGPT_CONFORMANCE_UPSTREAM', '{self.upstream_url}');
define('BATCHGPT_CONFORMANCE_LOG', '{self.logs}/outgoing-http.log');
define('BATCHGPT_CONFORMANCE_EVENTS', '{self.events_log}');
if (!defined('ABSPATH')) {{
    define('ABSPATH', __DIR__ . '/');
}}
require_once ABSPATH . 'wp-settings.php';
"""

    def _install(self) -> None:
        self.php(
            f"""
            update_option('permalink_structure', '/%postname%/');
            switch_theme('{THEME}');
            update_option('blog_public', '0');
            flush_rewrite_rules(false);
            $result = ['theme' => get_stylesheet(), 'version' => get_bloginfo('version')];
            """,
            prelude="""
            define('WP_INSTALLING', true);
            """,
            after_load="""
            require_once ABSPATH . 'wp-admin/includes/upgrade.php';
            if (!is_blog_installed()) {
                wp_install('Conformance', 'admin', 'admin@example.invalid', false, '',
                           wp_generate_password(20));
            }
            """,
            pluggable="function wp_new_blog_notification() {}",
        )

    def php(
        self,
        code: str,
        *,
        prelude: str = "",
        after_load: str = "",
        pluggable: str = "",
        timeout: float = 180,
    ) -> Any:
        """Run PHP inside WordPress (as the web server's user); `$result` comes back as JSON."""
        self._scripts += 1
        script = self.root / "php" / f"cli-{self._scripts:03d}.php"
        host = self.url.split("//", 1)[1]
        script.write_text(
            f"""<?php
ini_set('display_errors', 'stderr');
$_SERVER['HTTP_HOST'] = '{host}';
$_SERVER['SERVER_NAME'] = '127.0.0.1';
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['REQUEST_METHOD'] = 'GET';
{prelude}
{pluggable}
require '{self.docroot}/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/plugin.php';
{after_load}
$result = null;
{code}
echo "\\n{RESULT_MARKER}" . json_encode($result);
"""
        )
        kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:
            kwargs = {"user": WEB_USER, "group": WEB_USER, "extra_groups": []}
        try:
            done = subprocess.run(
                ["php", str(script)],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.docroot,
                check=False,
                **kwargs,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"php {script.name} timed out after {timeout:g} s") from exc
        with (self.logs / "php-cli.log").open("a") as log:
            log.write(f"== {script.name} exit {done.returncode}\n{done.stdout}\n{done.stderr}\n")
        if done.returncode != 0 or RESULT_MARKER not in done.stdout:
            output = (done.stdout + done.stderr).strip()[-2000:]
            raise ServiceError(f"php {script.name} failed ({done.returncode}): {output}")
        return json.loads(done.stdout.rsplit(RESULT_MARKER, 1)[1])

    def events_offset(self) -> int:
        return self.events_log.stat().st_size if self.events_log.exists() else 0

    def events(self, start: int = 0) -> list[dict[str, Any]]:
        """The must-use plugin's event lines from byte offset `start` (see instrument.py)."""
        if not self.events_log.exists():
            return []
        with self.events_log.open("rb") as log:
            log.seek(start)
            lines = log.read().decode("utf-8", "replace").splitlines()
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def write_mu_plugin(self, name: str, source: str) -> Path:
        path = self.content_dir / "mu-plugins" / name
        path.write_text(source)
        _chown_tree(path, WEB_USER)
        return path

    def chown(self) -> None:
        """Give the document root back to the web server after files were added as root."""
        _chown_tree(self.docroot, WEB_USER)
