"""A real deployment for tests and benchmarks: nginx on ``deploy/nginx/hoofhearted.conf`` with a
throw-away self-signed certificate, in front of daphne on loopback, with a real collect
worker replaying the H100 capture into a throw-away SQLite database.

Ports, paths and the upstream are rewritten in the site file; everything else is served as
shipped. The worker publishes through Redis when ``REDIS_URL`` is set (as the test command
does), else the page follows the database.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SITE_CONF = ROOT / "deploy" / "nginx" / "hoofhearted.conf"
CAPTURE = ROOT / "monitoring" / "captures" / "nvidia" / "h100"
DAPHNE = [sys.executable, "-m", "hoofhearted.web"]  # daphne on uvloop, as shipped
HOST = "h100"
TOKEN = "nginx-test-read-only-token"
SECRET_KEY = "nginx-test-" + "s3cr3t-k3y-" * 5


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s: {log.read_text()[-2000:]}")


def site_config(http: int, https: int, upstream: int, cert: Path, key: Path, static: Path) -> str:
    """The shipped site file with this run's ports and paths (each rewrite must apply)."""
    text = SITE_CONF.read_text()
    rewrites = [
        ("    listen [::]:80;\n", ""),  # IPv4 loopback only here
        ("    listen [::]:443 ssl http2;\n", ""),
        ("listen 80;", f"listen 127.0.0.1:{http};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};"),
        ("/etc/ssl/certs/hoofhearted.pem", str(cert)),
        ("/etc/ssl/private/hoofhearted.key", str(key)),
        ("alias /srv/hoofhearted/static/;", f"alias {static}/;"),
    ]
    for old, new in rewrites:
        assert old in text, f"{SITE_CONF.name} no longer has {old!r}"
        text = text.replace(old, new)
    return text


def main_config(run: Path) -> str:
    temp = "\n".join(
        f"  {kind}_temp_path {run / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""pid {run}/nginx.pid;
error_log {run}/error.log warn;
worker_processes 1;
events {{ worker_connections 512; }}
http {{
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log {run}/access.log;
{temp}
  include {run}/site.conf;
}}
"""


def self_signed(run: Path) -> tuple[Path, Path]:
    cert, key = run / "cert.pem", run / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclass
class Site:
    run: Path
    http: int
    https: int
    daphne: int
    env: dict[str, str]
    cert: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"https://localhost:{self.https}"

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def get(self, path: str, *, token: str | None = TOKEN, via_nginx: bool = True, **headers):
        """(status, headers, body) of a GET through nginx over TLS (or straight to daphne)."""
        if via_nginx:
            conn = http.client.HTTPSConnection(
                "localhost", self.https, context=self.tls(), timeout=30
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.daphne, timeout=30)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def get_json(self, path: str, **kwargs) -> tuple[int, dict]:
        status, _, body = self.get(path, **kwargs)
        return status, json.loads(body)

    def wait_healthy(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            status, body = self.get_json("/api/health")
            if status == 200:
                return body
            time.sleep(0.25)
        raise AssertionError(f"not healthy after {timeout} s: {body}")

    def manage(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
            capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.run / f"{name}.log").open("w")
        process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def running_site(**extra_env: str) -> Iterator[Site]:
    """Start worker, daphne and nginx; stop them and remove every file on exit."""
    nginx = nginx_binary()
    if nginx is None:
        raise RuntimeError("nginx is not installed (scripts/services.sh installs it)")
    # nginx's workers run as nobody when we are root: everything they read must be readable.
    run = Path(tempfile.mkdtemp(prefix="hoofhearted-site-"))
    run.chmod(0o755)
    http, https, upstream = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB", "HOOFHEARTED_", "LOG_"))}
    env.update(
        DEBUG="0",
        SECRET_KEY=SECRET_KEY,
        ALLOWED_HOSTS="localhost,127.0.0.1",
        CSRF_TRUSTED_ORIGINS=f"https://localhost:{https}",
        HOOFHEARTED_ACCESS_TOKEN=TOKEN,
        HOOFHEARTED_HOST_NAME=HOST,
        HOOFHEARTED_TELEMETRY_GROUP=f"telemetry-site-{upstream}",
        DB="sqlite",
        DB_NAME=str(run / "db.sqlite3"),
        STATIC_ROOT=str(run / "static"),
        LOG_LEVEL="warning",
        **extra_env,
    )
    cert, key = self_signed(run)
    site = Site(run, http, https, upstream, env, cert)
    try:
        # the worker creates the SQLite tables itself (as ./scripts/run does) meanwhile
        site.start(
            "worker",
            [sys.executable, "manage.py", "collect", "--replay", str(CAPTURE), "--state", "load"],
        )
        site.manage("collectstatic", "--noinput", "-v0", "--skip-checks")
        daphne = site.start(
            "daphne",
            [*DAPHNE, "-b", "127.0.0.1", "-p", str(upstream), "--websocket_timeout", "-1",
             "-v", "0", "hoofhearted.asgi:application"],
        )  # fmt: skip
        (run / "site.conf").write_text(
            site_config(http, https, upstream, cert, key, run / "static")
        )
        (run / "nginx.conf").write_text(main_config(run))
        check = subprocess.run(
            [nginx, "-t", "-p", str(run), "-c", str(run / "nginx.conf"), "-e", str(run / "error.log")],
            capture_output=True, text=True,
        )  # fmt: skip
        assert check.returncode == 0, check.stderr
        server = site.start(
            "nginx",
            [nginx, "-p", str(run), "-c", str(run / "nginx.conf"), "-e", str(run / "error.log"),
             "-g", "daemon off;"],
        )  # fmt: skip
        wait_for_port(upstream, daphne, run / "daphne.log")
        wait_for_port(https, server, run / "error.log")
        yield site
    finally:
        site.stop()
        shutil.rmtree(run, ignore_errors=True)
