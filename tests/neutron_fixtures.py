"""A real neutron-server with the dfflow ML2 driver and router plugin, once per test session.

MariaDB (Debian's `mariadbd`, its own datadir, on 127.0.0.1) holds Neutron's database, migrated with
`neutron-db-manage upgrade heads`; gunicorn serves Neutron's API (`dfflow.neutron.wsgi:application`,
noauth, `transport_url = fake:/`) on loopback; the NB db is a real redis-server. All of it is stopped
and its directory removed at the end of the session.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.sandbox.redisproc import RedisServer, free_port
from dfflow.nb.store import NbApi

VENV_BIN = Path(sys.executable).parent
DB_PASSWORD = "dfflow-test"


def _wait(what: str, ready: Any, proc: subprocess.Popen, logs: list[Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tails = "".join(f"\n--- {log}:\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists())
            raise RuntimeError(f"{what} did not start (exit {proc.poll()}){tails}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class MariaDb:
    """A private mariadbd on 127.0.0.1 (a free port) with an empty `neutron` database."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.port = free_port()
        self.socket = workdir / "mysqld.sock"
        self.log = workdir / "mariadb.err"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mysql+pymysql://neutron:{DB_PASSWORD}@127.0.0.1:{self.port}/neutron?charset=utf8"

    def _sql(self, statement: str) -> subprocess.CompletedProcess:
        return subprocess.run(["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-e", statement],
                              capture_output=True, text=True)

    def start(self) -> None:
        data = self.dir / "data"
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True)
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={self.socket}", f"--port={self.port}",
             "--bind-address=127.0.0.1", "--user=root", f"--pid-file={self.dir / 'mariadb.pid'}",
             f"--log-error={self.log}", "--innodb-buffer-pool-size=64M", "--skip-name-resolve"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait("mariadbd", lambda: self._sql("SELECT 1").returncode == 0, self.proc, [self.log], 60)
        done = self._sql("CREATE DATABASE neutron CHARACTER SET utf8; "
                         f"CREATE USER 'neutron'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; "
                         "GRANT ALL PRIVILEGES ON neutron.* TO 'neutron'@'127.0.0.1';")
        if done.returncode != 0:
            raise RuntimeError(f"creating Neutron's database failed: {done.stderr}")

    def stop(self) -> None:
        _stop(self.proc)


class NovaRecorder:
    """Stands in for Nova's API: records the external events (`network-vif-plugged`, ...) that Neutron's
    Nova notifier POSTs to `/v2.1/os-server-external-events`, and accepts them as Nova does."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self.path.endswith("/os-server-external-events"):
                    self.send_error(404)
                    return
                with recorder.lock:
                    recorder.events.extend(body.get("events", []))
                reply = json.dumps({"events": [dict(e, status="completed", code=200)
                                               for e in body.get("events", [])]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, name="nova-recorder", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v2.1"

    def events_for(self, port_id: str) -> list[tuple[str, str, str]]:
        """(name, status, server_uuid) of the events about `port_id`, in the order received."""
        with self.lock:
            return [(e["name"], e.get("status", ""), e["server_uuid"]) for e in self.events
                    if e.get("tag") == port_id]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def neutron_config(workdir: Path, db_url: str, nb_url: str, nova_url: str) -> list[Path]:
    """neutron.conf and ml2_conf.ini for the dfflow driver and router plugin (what README shows)."""
    paste = VENV_BIN.parent / "etc" / "neutron" / "api-paste.ini"
    (workdir / "state").mkdir(exist_ok=True)
    neutron_conf = workdir / "neutron.conf"
    neutron_conf.write_text(f"""[DEFAULT]
core_plugin = ml2
service_plugins = dfflow-router
auth_strategy = noauth
transport_url = fake:/
api_paste_config = {paste}
state_path = {workdir / 'state'}
log_file = {workdir / 'neutron.log'}
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
send_events_interval = 1

[nova]
auth_type = none
endpoint = {nova_url}

[database]
connection = {db_url}

[oslo_concurrency]
lock_path = {workdir / 'state'}
""")
    ml2_conf = workdir / "ml2_conf.ini"
    ml2_conf.write_text(f"""[ml2]
type_drivers = geneve
tenant_network_types = geneve
mechanism_drivers = dfflow
extension_drivers = port_security
overlay_ip_version = 4

[ml2_type_geneve]
vni_ranges = 1:65535
max_header_size = 38

[dfflow]
nb_url = {nb_url}
maintenance_interval = 0.5
""")
    return [neutron_conf, ml2_conf]


class NeutronApi:
    """Neutron's API under gunicorn on a free loopback port (one worker)."""

    def __init__(self, workdir: Path, config_files: list[Path]):
        self.dir = workdir
        self.config_files = config_files
        self.port = free_port()
        self.log = workdir / "gunicorn.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def migrate(self) -> None:
        args = [str(VENV_BIN / "neutron-db-manage")]
        for path in self.config_files:
            args += ["--config-file", str(path)]
        done = subprocess.run(args + ["upgrade", "heads"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"neutron-db-manage upgrade heads failed:\n{done.stderr[-3000:]}")

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url + "/v2.0/networks", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        env = dict(os.environ, OS_NEUTRON_CONFIG_FILES=";".join(map(str, self.config_files)))
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{self.port}", "--workers", "1",
             "--timeout", "300", "--log-file", str(self.log), "dfflow.neutron.wsgi:application"],
            env=env, cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait("neutron-server (gunicorn)", self._answers, self.proc, [self.dir / "neutron.log", self.log], 120)

    def stop(self) -> None:
        _stop(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()

    def sync(self, mode: str, *options: str) -> subprocess.CompletedProcess:
        """`dfflow neutron-sync` with this server's configuration."""
        args = [str(VENV_BIN / "dfflow"), "neutron-sync", "--mode", mode, *options]
        for path in self.config_files:
            args += ["--config-file", str(path)]
        return subprocess.run(args, capture_output=True, text=True, timeout=300)


class NeutronDeployment:
    """MariaDB + redis (the NB) + Neutron's API with dfflow (its Nova notifier sending to a recorder),
    started in order and stopped in reverse. With `nb_url`, the NB is that one (a sandbox's) instead."""

    def __init__(self, workdir: Path, nb_url: str | None = None):
        self.dir = workdir
        self.redis = RedisServer(str(workdir / "redis"), unixsocket=False) if nb_url is None else None
        self._nb_url = nb_url
        self.db = MariaDb(workdir)
        self.nova = NovaRecorder()
        self.api: NeutronApi | None = None

    @property
    def nb_url(self) -> str:
        return self.redis.url if self.redis is not None else self._nb_url

    @property
    def url(self) -> str:
        assert self.api is not None
        return self.api.url

    def start(self) -> "NeutronDeployment":
        try:
            if self.redis is not None:
                self.redis.start()
            self.db.start()
            self.api = NeutronApi(self.dir, neutron_config(self.dir, self.db.url, self.nb_url, self.nova.url))
            self.api.migrate()
            self.api.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()
        self.db.stop()
        if self.redis is not None:
            self.redis.stop()
        self.nova.stop()


def flush_nb(nb_url: str) -> None:
    """The NB db lost entirely (FLUSHDB): no object, no revision counter, no event sent."""
    async def flush() -> None:
        nb = NbApi(nb_url)
        try:
            await nb.redis.flushdb()
        finally:
            await nb.close()
    asyncio.run(flush())


def missing() -> str | None:
    """Why a neutron-server cannot be run here, or None."""
    for binary in ("mariadbd", "mariadb-install-db", "redis-server"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (bash scripts/setup-neutron.sh)"
    for tool in ("gunicorn", "neutron-db-manage"):
        if not (VENV_BIN / tool).exists():
            return f"{tool} is not in the venv (bash scripts/setup-neutron.sh installs dfflow[neutron])"
    if os.geteuid() != 0:
        return "mariadbd runs as root here (--user=root): run the tests as root"
    return None


@pytest.fixture(scope="session")
def neutron():
    """The session's neutron-server with dfflow: `.url` (Neutron API), `.nb_url` (the NB db), `.nova`
    (the events Neutron sent to Nova)."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="dfflow-neutron-") as workdir:
        deployment = NeutronDeployment(Path(workdir)).start()
        try:
            yield deployment
        finally:
            deployment.stop()

