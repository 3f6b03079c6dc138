"""A throwaway PostgreSQL server for the tests, and a fresh empty database for each test that asks.

The first test that uses `postgres_url` (or `postgres_server`) starts one cluster for the whole pytest
session: `initdb` into a new temporary folder, then `pg_ctl start` with durability switched off. The
server listens on a Unix socket in that folder only (`listen_addresses=''`), so parallel copies of the
suite on one machine never compete for a port or a path. At session end the server is stopped
(`pg_ctl -m immediate stop`, also after failed tests) and the folder removed; a folder left by a run
that was killed is cleaned by the next run. While the server runs, the session's environment has no PG*
variables (a developer's PGOPTIONS or PGTZ would otherwise reach every connection of the tests).

PostgreSQL refuses to run as root: then initdb and the server run as the `postgres` account (created by
Debian's package), else as `nobody`, through `runuser -u` (or `setpriv`), and the temporary folder is
given to that account. The tests, still root, reach the socket regardless of its permissions.

Without the server binaries the tests that need them are skipped with the reason, unless
DREAMBOARD_REQUIRE_POSTGRES=1 (set by `.ci/run`): then they fail.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

REQUIRE_VARIABLE = "DREAMBOARD_REQUIRE_POSTGRES"
"""Set to 1 (CI does) to make a missing PostgreSQL server a test failure instead of a skip."""

SUPERUSER = "dreamboard"
"""The cluster's superuser; trust authentication, so no password."""

PORT = 5432
"""Names the socket file (`.s.PGSQL.5432`) in the cluster's private folder; no TCP port is opened."""

DEBIAN_ROOT = Path("/usr/lib/postgresql")
FOLDER_PREFIX = "dreamboard-pg-"
OWNER_FILE = "owner.pid"
SERVER_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c TimeZone=UTC"
)
TOOLS = ("initdb", "pg_ctl", "postgres")
_SOCKET_PATH_LIMIT = 107  # sun_path is 108 bytes on Linux, one of them the terminating NUL
START_TIMEOUT = 60


class PostgresUnavailable(Exception):
    """No PostgreSQL server binaries on this machine."""


@dataclass(frozen=True)
class Binaries:
    """The server programs of one PostgreSQL installation."""

    bin_dir: Path

    @property
    def initdb(self) -> str:
        return str(self.bin_dir / "initdb")

    @property
    def pg_ctl(self) -> str:
        return str(self.bin_dir / "pg_ctl")


def _has_tools(directory: Path) -> bool:
    return all(os.access(directory / tool, os.X_OK) for tool in TOOLS)


def _version_key(directory: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", directory.parent.name)) or (-1,)


def find_binaries(search_path: str | None = None, debian_root: Path = DEBIAN_ROOT) -> Binaries | None:
    """The installation whose `initdb`, `pg_ctl` and `postgres` are on `search_path` (default $PATH),
    else the newest version under Debian's /usr/lib/postgresql/<version>/bin; None when neither has
    all three."""
    found = shutil.which("initdb", path=search_path)
    if found is not None:
        directory = Path(found).resolve().parent
        if _has_tools(directory):
            return Binaries(directory)
    candidates = [d for d in debian_root.glob("*/bin") if _has_tools(d)]
    if not candidates:
        return None
    return Binaries(max(candidates, key=_version_key))


@dataclass(frozen=True)
class Account:
    """Whom initdb and the server run as: `prefix` is prepended to their command lines."""

    uid: int
    gid: int
    prefix: tuple[str, ...] = ()


def server_account(euid: int | None = None) -> Account:
    """This process's own account, or, for root (which PostgreSQL refuses), `postgres` if it exists,
    else `nobody`, entered through runuser or setpriv."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return Account(euid, os.getegid())
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            break
    else:
        raise PostgresUnavailable("running as root, and neither a `postgres` nor a `nobody` account exists")
    runuser = shutil.which("runuser")
    if runuser is not None:
        return Account(entry.pw_uid, entry.pw_gid, (runuser, "-u", entry.pw_name, "--"))
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        ids = (f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups")
        return Account(entry.pw_uid, entry.pw_gid, (setpriv, *ids, "--"))
    raise PostgresUnavailable("running as root, and neither runuser nor setpriv is installed")


def reachable_by(path: Path, account: Account) -> bool:
    """Whether `account` may traverse every folder down to `path`."""
    for folder in (path, *path.parents):
        info = folder.stat()
        if info.st_uid == account.uid:
            bit = 0o100
        elif info.st_gid == account.gid:
            bit = 0o010
        else:
            bit = 0o001
        if not info.st_mode & bit:
            return False
    return True


def _temporary_root(account: Account) -> Path:
    root = Path(tempfile.gettempdir()).resolve()
    socket_length = len(str(root)) + len(f"/{FOLDER_PREFIX}xxxxxxxx/.s.PGSQL.{PORT}")
    if socket_length > _SOCKET_PATH_LIMIT or not reachable_by(root, account):
        return Path("/tmp")
    return root


def _clean_environment() -> dict[str, str]:
    """This process's environment without libpq's PG* settings, which would redirect the tools."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_running(pid: int) -> bool:
    """Whether `pid` is a live process (on Linux, a zombie that nobody reaped yet is not)."""
    if not Path("/proc/self/stat").exists():
        return _pid_alive(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return _pid_alive(pid)
    return stat.rpartition(")")[2].split()[0] != "Z"


def _await_exit(pid: int, timeout: float = 10.0) -> None:
    """Wait until process `pid` (not a child of ours, so there is nothing to wait on) is gone, at most
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while process_running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def sweep_abandoned(root: Path) -> list[Path]:
    """Stop the servers of and remove the cluster folders under `root` whose pytest process is gone
    (killed before its teardown ran). Folders of live runs, or without an owner file yet, are left."""
    removed = []
    for folder in root.glob(f"{FOLDER_PREFIX}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if process_running(owner):
            continue
        data = folder / "data"
        with contextlib.suppress(OSError, ValueError, IndexError):
            server = int((data / "postmaster.pid").read_text().split()[0])
            # A postmaster works in its data folder: this tells it from a process that reused its pid.
            if os.readlink(f"/proc/{server}/cwd") == str(data):
                os.kill(server, signal.SIGQUIT)  # what `pg_ctl -m immediate stop` sends
                _await_exit(server)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _run(command: Sequence[str], what: str, log: Path | None = None) -> None:
    result = subprocess.run(  # noqa: S603 - fixed programs, arguments built here
        command, capture_output=True, text=True, env=_clean_environment(), check=False, cwd="/"
    )
    if result.returncode != 0:
        details = result.stdout + result.stderr
        if log is not None and log.exists():
            details += f"\n--- {log}:\n" + log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {shlex.join(command)}\n{details}")


@dataclass
class PostgresServer:
    """A running throwaway cluster reached through the Unix socket in `socket_dir`."""

    binaries: Binaries
    account: Account
    folder: Path
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def socket_dir(self) -> Path:
        return self.folder

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_file(self) -> Path:
        return self.folder / "server.log"

    def url(self, database: str = "postgres") -> str:
        """A libpq/psycopg URL for `database` on this server, e.g.
        `postgresql://dreamboard@/t_1?host=/tmp/dreamboard-pg-x&port=5432`."""
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/{quote(database)}?host={host}&port={PORT}"

    @classmethod
    def start(cls, binaries: Binaries, account: Account, root: Path | None = None) -> PostgresServer:
        """initdb a new cluster in a new folder under `root` (default: the temporary folder) and start
        its server; stops and removes it again if starting fails."""
        root = _temporary_root(account) if root is None else root
        sweep_abandoned(root)
        folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=root))
        (folder / OWNER_FILE).write_text(str(os.getpid()))
        os.chown(folder, account.uid, account.gid)
        server = cls(binaries, account, folder)
        try:
            server._initdb()
            server._pg_ctl_start()
        except BaseException:
            server.stop()
            raise
        return server

    def _initdb(self) -> None:
        _run(
            [
                *self.account.prefix,
                self.binaries.initdb,
                f"--pgdata={self.data_dir}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",  # needs no installed locale; sorts by code point, as SQLite does
                "--no-sync",
                "--no-instructions",
            ],
            "initdb",
        )

    def _pg_ctl_start(self) -> None:
        options = f"-c listen_addresses='' -k {shlex.quote(str(self.socket_dir))} -p {PORT} {SERVER_OPTIONS}"
        _run(
            [
                *self.account.prefix,
                self.binaries.pg_ctl,
                "start",
                f"--pgdata={self.data_dir}",
                f"--log={self.log_file}",
                f"--timeout={START_TIMEOUT}",
                "--wait",
                "--silent",
                f"--options={options}",
            ],
            "pg_ctl start",
            self.log_file,
        )

    def stop(self) -> None:
        """Stop the server at once (no checkpoint: the data is thrown away) and remove the folder."""
        if (self.data_dir / "postmaster.pid").exists():
            command = [*self.account.prefix, self.binaries.pg_ctl, "stop", f"--pgdata={self.data_dir}"]
            with contextlib.suppress(RuntimeError):
                _run([*command, "--mode=immediate", "--silent"], "pg_ctl stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self) -> str:
        """A new empty database (a copy of template0), named t_<n>."""
        name = f"t_{next(self._names)}"
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(statement)
        return name

    def drop_database(self, name: str) -> None:
        """Drop `name`, ending the sessions still connected to it."""
        with psycopg.connect(self.url(), autocommit=True) as connection:
            if connection.info.server_version >= 130000:
                template = "DROP DATABASE IF EXISTS {} WITH (FORCE)"
            else:
                connection.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                )
                template = "DROP DATABASE IF EXISTS {}"
            connection.execute(sql.SQL(template).format(sql.Identifier(name)))

    def databases(self) -> set[str]:
        """The names of the databases on this server, templates left out."""
        rows = run_sql(self.url(), "SELECT datname FROM pg_database WHERE NOT datistemplate")
        return {str(row[0]) for row in rows}


def run_sql(url: str, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    """Run one SQL statement on its own autocommit connection; the rows it returns, if any."""
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(statement, params)
        return cursor.fetchall() if cursor.description is not None else []


async def run_sql_async(
    url: str, statement: str, params: Sequence[Any] | None = None
) -> list[tuple[Any, ...]]:
    """`run_sql` without blocking the event loop (use it while a bot under test shares the loop)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        cursor = await connection.execute(statement, params)
        return await cursor.fetchall() if cursor.description is not None else []


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test, or fail it when DREAMBOARD_REQUIRE_POSTGRES=1."""
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{reason} ({REQUIRE_VARIABLE}=1, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(f"{reason}; install it (Debian: apt-get install postgresql) or set PATH to its bin folder")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One running throwaway cluster for the whole session (started on first use). From then on the
    session runs without the developer's PG* variables, which libpq would apply to every connection."""
    binaries = find_binaries()
    if binaries is None:
        unavailable(f"PostgreSQL server not found (initdb, pg_ctl, postgres on PATH or {DEBIAN_ROOT}/*/bin)")
    try:
        account = server_account()
    except PostgresUnavailable as error:
        unavailable(str(error))
    with pytest.MonkeyPatch.context() as patch:
        for name in os.environ.keys() - _clean_environment().keys():
            patch.delenv(name)
        server = PostgresServer.start(binaries, account)
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def fresh_database(server: PostgresServer) -> Iterator[str]:
    """The URL of a new empty database on `server`, dropped on leaving (connections still open to it
    are ended)."""
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new empty database for this test only, dropped afterwards."""
    with fresh_database(postgres_server) as url:
        yield url


POSTGRES_FIXTURES = frozenset({"postgres_server", "postgres_url"})


def mark_postgres_tests(items: list[pytest.Item]) -> None:
    """Mark every test that uses a Postgres fixture `postgres`, so `pytest -m postgres` runs them alone."""
    for item in items:
        if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
