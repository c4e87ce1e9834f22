"""neutron-server with the dfflow ML2 driver and router plugin, as the sandbox and the tests run it.

MariaDB (Debian's `mariadbd` in its own datadir, bound to 127.0.0.1) holds Neutron's database, migrated
with `neutron-db-manage upgrade heads`; gunicorn serves Neutron's API (`neutron.wsgi.api`, through
`dfflow.neutron.wsgi`, which keeps gunicorn's command line away from oslo.config) on loopback with
`auth_strategy = noauth` and `transport_url = fake:/`: with no agent there is nothing to send RPC to,
and the API process runs what dfflow needs (the VIF-up watcher, the NB maintenance), so neither
`neutron-rpc-server` nor `neutron-periodic-workers` is started. Neutron's Nova notifier sends to
`nova_url` when one is given (`[nova] auth_type = none`), and is off without one.

Every process works in `<dir>` (its cwd), so what a crashed run left is found again by that alone.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from . import procs
from .netns import SandboxError
from .redisproc import free_port

VENV_BIN = Path(sys.executable).parent
DB_PASSWORD = "dfflow-sandbox"
DB_START_TIMEOUT = 60.0
API_START_TIMEOUT = 120.0  # s; ~4 s on an idle machine, much more on a busy 2-core one
STOP_TIMEOUT = 10.0
SERVER_BINARIES = ("mariadbd", "mariadb-install-db", "mariadb")
VENV_TOOLS = ("gunicorn", "neutron-db-manage")


def missing() -> list[str]:
    """Why neutron-server cannot run here (empty: it can)."""
    found = [f"{binary} is not installed (bash scripts/setup-neutron.sh)"
             for binary in SERVER_BINARIES if shutil.which(binary) is None]
    found += [f"{tool} is not in {VENV_BIN} (bash scripts/setup-neutron.sh installs dfflow[neutron])"
              for tool in VENV_TOOLS if not (VENV_BIN / tool).exists()]
    if os.geteuid() != 0:
        found.append("mariadbd runs as root here (--user=root): run as root")
    return found


def _tails(logs: list[Path]) -> str:
    return "".join(f"\n--- {log}:\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists())


def _wait(what: str, ready: Callable[[], bool], pid: int, logs: list[Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not procs.alive(pid) or time.monotonic() > deadline:
            state = "exited" if not procs.alive(pid) else f"not ready after {timeout:g} s"
            raise SandboxError(f"{what} did not start ({state}){_tails(logs)}")
        time.sleep(0.1)


def _spawn(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, int | None]:
    """Start a daemon of ours in its own session (a Ctrl-C of the caller is not its), detached from our
    stdio; (pid, start time)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    return proc.pid, procs.starttime(proc.pid)


class MariaDb:
    """A private mariadbd on 127.0.0.1 (a free port) with an empty `neutron` database."""

    def __init__(self, workdir: Path, port: int | None = None, pid: int | None = None,
                 starttime: int | None = None):
        self.dir = workdir
        self.port = port or free_port()
        self.pid, self.starttime = pid, starttime
        self.socket = workdir / "mysqld.sock"
        self.log = workdir / "mariadb.err"

    @property
    def url(self) -> str:
        return f"mysql+pymysql://neutron:{DB_PASSWORD}@127.0.0.1:{self.port}/neutron?charset=utf8"

    def _sql(self, statement: str) -> subprocess.CompletedProcess:
        return subprocess.run(["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-e", statement],
                              capture_output=True, text=True)

    def start(self, on_started: Callable[[], None] = lambda: None) -> None:
        """`on_started` runs as soon as the daemon has a pid (the sandbox records it before waiting)."""
        data = self.dir / "data"
        done = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                               "--auth-root-authentication-method=normal", "--skip-test-db"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SandboxError(f"mariadb-install-db failed: {done.stderr[-2000:]}")
        self.pid, self.starttime = _spawn(
            ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={self.socket}", f"--port={self.port}",
             "--bind-address=127.0.0.1", "--user=root", f"--pid-file={self.dir / 'mariadb.pid'}",
             f"--log-error={self.log}", "--innodb-buffer-pool-size=64M", "--skip-name-resolve"], self.dir)
        on_started()
        _wait("mariadbd", lambda: self._sql("SELECT 1").returncode == 0, self.pid, [self.log], DB_START_TIMEOUT)
        done = self._sql("CREATE DATABASE neutron CHARACTER SET utf8; "
                         f"CREATE USER 'neutron'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; "
                         "GRANT ALL PRIVILEGES ON neutron.* TO 'neutron'@'127.0.0.1';")
        if done.returncode != 0:
            raise SandboxError(f"creating Neutron's database failed: {done.stderr}")


def write_config(workdir: Path, db_url: str, nb_url: str, nova_url: str | None) -> list[Path]:
    """neutron.conf and ml2_conf.ini for the dfflow driver and router plugin (what README shows)."""
    paste = VENV_BIN.parent / "etc" / "neutron" / "api-paste.ini"
    (workdir / "state").mkdir(exist_ok=True)
    notify = "true" if nova_url else "false"
    nova = f"\n[nova]\nauth_type = none\nendpoint = {nova_url}\n" if nova_url else ""
    neutron_conf = workdir / "neutron.conf"
    neutron_conf.write_text(f"""[DEFAULT]
core_plugin = ml2
service_plugins = dfflow-router
auth_strategy = noauth
transport_url = fake:/
api_paste_config = {paste}
state_path = {workdir / 'state'}
log_file = {workdir / 'neutron.log'}
notify_nova_on_port_status_changes = {notify}
notify_nova_on_port_data_changes = {notify}
send_events_interval = 1
{nova}
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


class NeutronServer:
    """MariaDB and Neutron's API under gunicorn (one worker) on free loopback ports, in `workdir`.

    `start()` builds it from nothing; `to_state()`/`from_state()` carry what `stop()` needs across
    processes (the sandbox's state file)."""

    def __init__(self, workdir: str | Path, nb_url: str, nova_url: str | None = None, port: int | None = None,
                 pid: int | None = None, starttime: int | None = None, db: MariaDb | None = None):
        self.dir = Path(workdir)
        self.nb_url, self.nova_url = nb_url, nova_url
        self.port = port or free_port()
        self.pid, self.starttime = pid, starttime
        self.db = db or MariaDb(self.dir)
        self.log = self.dir / "gunicorn.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_files(self) -> list[Path]:
        return [self.dir / "neutron.conf", self.dir / "ml2_conf.ini"]

    @property
    def logs(self) -> list[Path]:
        return [self.dir / "neutron.log", self.log]

    def start(self, on_started: Callable[["NeutronServer"], None] = lambda server: None) -> "NeutronServer":
        """Database, configuration, migrations, API; `on_started(self)` after each process is spawned.
        On failure, what was started is stopped again."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self.db.start(lambda: on_started(self))
            write_config(self.dir, self.db.url, self.nb_url, self.nova_url)
            self.migrate()
            self.start_api(on_started)
        except BaseException:
            self.stop()
            raise
        return self

    def _config_args(self) -> list[str]:
        return [arg for path in self.config_files for arg in ("--config-file", str(path))]

    def migrate(self) -> None:
        done = subprocess.run([str(VENV_BIN / "neutron-db-manage"), *self._config_args(), "upgrade", "heads"],
                              capture_output=True, text=True, cwd=self.dir)
        if done.returncode != 0:
            raise SandboxError(f"neutron-db-manage upgrade heads failed:\n{done.stderr[-3000:]}")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/v2.0/networks", timeout=2) as reply:
                return reply.status == 200
        except OSError:  # refused, reset, timed out, or an HTTP error status
            return False

    def start_api(self, on_started: Callable[["NeutronServer"], None] = lambda server: None) -> None:
        env = dict(os.environ, OS_NEUTRON_CONFIG_FILES=";".join(map(str, self.config_files)))
        self.pid, self.starttime = _spawn(
            [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{self.port}", "--workers", "1",
             "--timeout", "300", "--graceful-timeout", "5", "--log-file", str(self.log),
             "dfflow.neutron.wsgi:application"], self.dir, env)
        on_started(self)
        _wait("neutron-server (gunicorn)", self.answers, self.pid, self.logs, API_START_TIMEOUT)

    def stop_api(self) -> None:
        procs.terminate_all(self.api_pids(), STOP_TIMEOUT)

    def restart_api(self) -> None:
        self.stop_api()
        self.start_api()

    def api_pids(self) -> list[int]:
        """gunicorn's master and its workers (they share its working directory)."""
        return [pid for pid in running_in(self.dir) if procs.comm(pid) != "mariadbd"]

    def stop(self) -> list[int]:
        """Stop the API and the database (also when another process started them); the pids stopped."""
        return procs.terminate_all(running_in(self.dir), STOP_TIMEOUT)

    def sync(self, mode: str, *options: str) -> subprocess.CompletedProcess:
        """`dfflow neutron-sync` with this server's configuration."""
        return subprocess.run([str(VENV_BIN / "dfflow"), "neutron-sync", "--mode", mode, *options,
                               *self._config_args()], capture_output=True, text=True, timeout=300)

    def to_state(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "url": self.url, "port": self.port, "pid": self.pid,
                "starttime": self.starttime, "nb_url": self.nb_url, "nova_url": self.nova_url,
                "db": {"port": self.db.port, "pid": self.db.pid, "starttime": self.db.starttime},
                "config_files": [str(p) for p in self.config_files], "log": str(self.dir / "neutron.log")}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "NeutronServer":
        db = d.get("db") or {}
        workdir = Path(d["dir"])
        return cls(workdir, d.get("nb_url", ""), d.get("nova_url"), port=d.get("port"), pid=d.get("pid"),
                   starttime=d.get("starttime"),
                   db=MariaDb(workdir, port=db.get("port"), pid=db.get("pid"), starttime=db.get("starttime")))

    def alive(self) -> dict[str, bool]:
        return {"api": procs.same_process(self.pid, self.starttime),
                "db": procs.same_process(self.db.pid, self.db.starttime)}


def running_in(workdir: str | Path) -> list[int]:
    """Every process working in `workdir` or below: what a NeutronServer there started (gunicorn's master
    and workers; mariadbd, which moves into its datadir), found without any record of it."""
    where = str(Path(workdir).resolve())

    def works_there(pid: int) -> bool:
        cwd = procs.cwd(pid) or ""
        return cwd == where or cwd.startswith(where + os.sep)
    return procs.find(works_there)
