"""The throwaway PostgreSQL server of tests/postgres.py: it answers, databases are isolated and dropped,
abandoned clusters are cleaned, the newest server is found, and a missing server is a skip locally and a
failure in CI."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from tests.postgres import (
    FOLDER_PREFIX,
    OWNER_FILE,
    REQUIRE_VARIABLE,
    TOOLS,
    Account,
    PostgresServer,
    find_binaries,
    fresh_database,
    process_running,
    reachable_by,
    run_sql,
    run_sql_async,
    server_account,
    sweep_abandoned,
    unavailable,
)


def test_the_server_answers_on_its_own_socket_only(postgres_url: str) -> None:
    [(database, user, listen, fsync, zone)] = run_sql(
        postgres_url,
        "SELECT current_database(), current_user, current_setting('listen_addresses'),"
        " current_setting('fsync'), current_setting('TimeZone')",
    )
    assert database.startswith("t_")
    assert (user, listen, fsync, zone) == ("dreamboard", "", "off", "UTC")
    assert run_sql(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


async def test_the_async_helper_reads_what_the_sync_one_wrote(postgres_url: str) -> None:
    run_sql(postgres_url, "CREATE TABLE notes (body text)")
    run_sql(postgres_url, "INSERT INTO notes VALUES (%s), (%s)", ["a", "ü"])
    assert await run_sql_async(postgres_url, "SELECT body FROM notes ORDER BY body") == [("a",), ("ü",)]


def test_two_databases_are_isolated(postgres_server: PostgresServer) -> None:
    with fresh_database(postgres_server) as first, fresh_database(postgres_server) as second:
        assert first != second
        run_sql(first, "CREATE TABLE jobs (id int)")
        run_sql(first, "INSERT INTO jobs VALUES (1)")
        run_sql(second, "CREATE TABLE jobs (id int)")
        assert run_sql(first, "SELECT id FROM jobs") == [(1,)]
        assert run_sql(second, "SELECT id FROM jobs") == []


def test_leaving_drops_the_database_after_an_error_and_ends_its_sessions(
    postgres_server: PostgresServer,
) -> None:
    before = postgres_server.databases()
    opened: list[psycopg.Connection[tuple[object, ...]]] = []

    def failing_test() -> None:
        with fresh_database(postgres_server) as url:
            opened.append(psycopg.connect(url))
            assert opened[0].info.dbname in postgres_server.databases()
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match="the test failed"):
        failing_test()
    assert postgres_server.databases() == before
    [lingering] = opened
    with pytest.raises(psycopg.OperationalError):
        lingering.execute("SELECT 1")
    lingering.close()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_an_abandoned_cluster_is_stopped_and_removed_and_live_ones_are_left(
    postgres_server: PostgresServer,
) -> None:
    root = postgres_server.folder.parent
    live = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=root))
    starting = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=root))  # no owner file written yet
    abandoned = PostgresServer.start(postgres_server.binaries, postgres_server.account, root)
    try:
        (live / OWNER_FILE).write_text(str(os.getpid()))
        postmaster = int((abandoned.data_dir / "postmaster.pid").read_text().split()[0])
        (abandoned.folder / OWNER_FILE).write_text(str(_dead_pid()))

        assert sweep_abandoned(root) == [abandoned.folder]

        assert not abandoned.folder.exists()
        assert not process_running(postmaster)
        assert [live.exists(), starting.exists(), postgres_server.folder.exists()] == [True] * 3
        assert run_sql(postgres_server.url(), "SELECT 1") == [(1,)]
    finally:
        abandoned.stop()
        shutil.rmtree(live)
        shutil.rmtree(starting)


def _install(folder: Path, tools: tuple[str, ...] = TOOLS) -> Path:
    folder.mkdir(parents=True)
    for tool in tools:
        (folder / tool).write_text("#!/bin/sh\n")
        (folder / tool).chmod(0o755)
    return folder


def test_binaries_on_path_come_first_then_the_newest_debian_version(tmp_path: Path) -> None:
    debian = tmp_path / "lib"
    for version in ("9.6", "15", "16"):
        _install(debian / version / "bin")
    _install(debian / "17" / "bin", tools=("initdb", "pg_ctl"))  # no server: not a candidate
    own = _install(tmp_path / "own")
    partial = _install(tmp_path / "partial", tools=("initdb",))

    assert find_binaries(str(own), debian).bin_dir == own  # type: ignore[union-attr]
    assert find_binaries(str(partial), debian).bin_dir == debian / "16" / "bin"  # type: ignore[union-attr]
    assert find_binaries("", tmp_path / "nothing") is None


def test_root_hands_the_server_to_an_unprivileged_account() -> None:
    account = server_account(euid=0)
    expected = "postgres" if "postgres" in {entry.pw_name for entry in pwd.getpwall()} else "nobody"
    assert account.uid == pwd.getpwnam(expected).pw_uid != 0
    assert expected in account.prefix or f"--reuid={account.uid}" in account.prefix
    assert server_account(euid=1234).prefix == ()


def test_a_missing_server_is_a_skip_locally_and_a_failure_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_VARIABLE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server here; install it"):
        unavailable("no server here")
    monkeypatch.setenv(REQUIRE_VARIABLE, "1")
    with pytest.raises(pytest.fail.Exception, match=f"no server here .{REQUIRE_VARIABLE}=1"):
        unavailable("no server here")


def test_a_folder_only_its_owner_may_enter_is_not_reachable_by_the_server_account(tmp_path: Path) -> None:
    other = Account(uid=os.geteuid() + 1, gid=os.getegid() + 1)
    inner = tmp_path / "locked" / "inner"
    inner.mkdir(parents=True, mode=0o755)
    inner.parent.chmod(0o700)
    assert not reachable_by(inner, other)
    assert reachable_by(inner, Account(os.geteuid(), os.getegid()))
