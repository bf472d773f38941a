"""A real, throwaway PostgreSQL server on 127.0.0.1 for the tests that need one.

The server comes from Debian's ``postgresql`` package, which ``make test`` installs. The
session fixture :func:`postgres_url` makes a fresh cluster in a temporary folder (initdb
with trust authentication), starts it on a free port, creates the database
``gradwise_test`` and gives its SQLAlchemy URL::

    def test_something(postgres_url: str) -> None:
        url = new_database(postgres_url, "test_something")  # a clean database of its own
        storage = optuna.storages.RDBStorage(url)

At the end of the session the server is stopped (``pg_ctl stop -m immediate``) and the
folder removed, whether the tests passed or not. PostgreSQL refuses to run as root, so
under root the cluster belongs to the ``postgres`` system user the Debian package creates
and the server programs run through ``runuser``.

A missing server is a failure, never a skip: the tests that ask for it exist to prove the
code works against PostgreSQL.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql
from sqlalchemy.engine import make_url

SUPERUSER = "gradwise"
DATABASE = "gradwise_test"
HOST = "127.0.0.1"
DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"
SYSTEM_USER = "postgres"  # the user Debian's package creates; it runs the server under root
START_TIMEOUT_S = 30.0
MISSING = (
    "PostgreSQL server binaries not found (initdb, pg_ctl, postgres under {dirs} or on "
    "PATH); `make test` installs Debian's postgresql package"
)
PORT_TAKEN = "could not create any TCP/IP sockets"  # the server log's line for a busy port
# PostgreSQL folds unquoted names to lower case and caps them at 63 bytes; asking for
# exactly that keeps a database's name the same in SQL, in the URL and in error messages.
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Settings for a disposable test server: durability traded for speed (nothing here has to
# survive a crash), modest memory, and no logging collector so the log file stays the
# one pg_ctl writes.
SETTINGS = {
    "listen_addresses": HOST,
    "max_connections": "100",
    "shared_buffers": "32MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "logging_collector": "off",
}


@dataclass(frozen=True)
class ServerBinaries:
    """Paths of the three PostgreSQL programs the fixture runs."""

    initdb: Path
    pg_ctl: Path
    postgres: Path


@dataclass(frozen=True)
class PostgresServer:
    """A running test cluster: where it lives, how to reach it, and how to run as its owner."""

    binaries: ServerBinaries
    root: Path  # the temporary folder holding everything below
    data_dir: Path
    socket_dir: Path
    log_file: Path
    port: int
    run_as: tuple[str, ...]  # the command prefix that runs a program as the cluster's owner

    def url(self, database: str = DATABASE) -> str:
        """The SQLAlchemy URL of ``database`` on this server, as the superuser."""
        return f"postgresql+psycopg2://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def log_tail(self, num_chars: int = 4000) -> str:
        """The end of the server log, for failure messages."""
        try:
            return self.log_file.read_text(errors="replace")[-num_chars:]
        except OSError as error:
            return f"(no server log: {error})"


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> ``(15,)``; non-numeric versions sort first."""
    parts = bin_dir.parent.name.split(".")
    return tuple(int(part) for part in parts) if all(p.isdigit() for p in parts) else (-1,)


def find_binaries() -> ServerBinaries | None:
    """The highest-versioned Debian install of the server programs, else the ones on PATH."""
    names = ("initdb", "pg_ctl", "postgres")
    for bin_dir in sorted(Path("/").glob(DEBIAN_BIN_DIRS.lstrip("/")), key=_version_key)[::-1]:
        paths = [bin_dir / name for name in names]
        if all(os.access(path, os.X_OK) for path in paths):
            return ServerBinaries(*paths)
    found = [shutil.which(name) for name in names]
    if all(found):
        return ServerBinaries(*(Path(path) for path in found if path is not None))
    return None


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _run(server: PostgresServer, *args: str | Path, timeout_s: float = 60.0) -> None:
    """Run a server program as the cluster's owner; raise with its output if it fails."""
    command = [*server.run_as, *(str(arg) for arg in args)]
    # The cwd matters under root: the postgres user may not be allowed into the caller's.
    result = subprocess.run(
        command, cwd=server.root, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {result.returncode}:\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


def _owner_prefix() -> tuple[tuple[str, ...], int | None, int | None]:
    """The command prefix and uid/gid that own the cluster: ``postgres`` under root, else us."""
    if os.geteuid() != 0:
        return (), None, None
    # runuser lives in /usr/sbin, which a non-login root shell may leave off PATH.
    runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if runuser is None:
        pytest.fail("running as root needs `runuser` to start PostgreSQL as another user")
    try:
        owner = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pytest.fail(
            f"PostgreSQL refuses to run as root and there is no {SYSTEM_USER!r} system user "
            "to run it as; install Debian's postgresql package (`make test` does) or run "
            "the tests as a normal user"
        )
    return (runuser, "-u", SYSTEM_USER, "--"), owner.pw_uid, owner.pw_gid


def _conf_value(value: str) -> str:
    """A postgresql.conf string literal: single quotes, inner quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def _write_settings(server: PostgresServer) -> None:
    # In the config file rather than on pg_ctl's -o line, which pg_ctl hands to a shell.
    settings = {
        **SETTINGS,
        "port": str(server.port),
        "unix_socket_directories": str(server.socket_dir),
    }
    lines = [f"{key} = {_conf_value(value)}" for key, value in settings.items()]
    with (server.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\n# gradwise test server\n" + "\n".join(lines) + "\n")


def connect(url: str) -> psycopg2.extensions.connection:
    """A psycopg2 connection (autocommit) to the database a SQLAlchemy URL names."""
    parsed = make_url(url)
    connection = psycopg2.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        connect_timeout=5,
    )
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    return connection


def _create_database(url: str, name: str) -> None:
    # closing(): psycopg2's own `with connection` ends a transaction, not the connection.
    with closing(connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _wait_until_ready(server: PostgresServer, timeout_s: float) -> None:
    """Retry connecting over TCP until the server answers, or raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connect(server.url("postgres")).close()
            return
        except psycopg2.OperationalError as error:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no connection after {timeout_s:.0f} s: {error}") from error
            time.sleep(0.1)


def _make_folders(
    binaries: ServerBinaries, run_as: Sequence[str], uid: int | None, gid: int | None
) -> PostgresServer:
    root = Path(tempfile.mkdtemp(prefix="gradwise-pg-"))
    socket_dir = root / "socket"
    socket_dir.mkdir()
    if uid is not None and gid is not None:
        # initdb creates data/ itself, as the owner, which needs to be able to write root.
        for path in (root, socket_dir):
            os.chown(path, uid, gid)
    return PostgresServer(
        binaries=binaries,
        root=root,
        data_dir=root / "data",
        socket_dir=socket_dir,
        log_file=root / "server.log",
        port=0,  # picked just before the server starts
        run_as=tuple(run_as),
    )


def _start_on_a_free_port(server: PostgresServer, num_attempts: int = 3) -> PostgresServer:
    """``pg_ctl start`` on a fresh free port; the server as started, with its port.

    Another process may take the port between the pick and the server's bind; that one
    failure gets a new port and another try.
    """
    for attempt in range(1, num_attempts + 1):
        server = replace(server, port=find_free_port())
        _write_settings(server)  # a later line in postgresql.conf overrides an earlier one
        try:
            _run(
                server, server.binaries.pg_ctl, "start", "--pgdata", server.data_dir,
                "--log", server.log_file, "-p", server.binaries.postgres,
                "--wait", "--timeout", str(int(START_TIMEOUT_S)),
                timeout_s=START_TIMEOUT_S + 10,
            )  # fmt: skip
            return server
        except RuntimeError:
            if attempt == num_attempts or PORT_TAKEN not in server.log_tail(500):
                raise
    raise AssertionError("unreachable")  # the loop returns or raises


def start_server() -> PostgresServer:
    """Create a fresh cluster in a temporary folder, start it, create :data:`DATABASE`.

    Fails the test (``pytest.fail``) with the server log's tail when anything goes wrong,
    after removing what it made. Pair with :func:`stop_server`.
    """
    binaries = find_binaries()
    if binaries is None:
        pytest.fail(MISSING.format(dirs=DEBIAN_BIN_DIRS))
    run_as, uid, gid = _owner_prefix()
    server = _make_folders(binaries, run_as, uid, gid)
    try:
        _run(
            server, server.binaries.initdb, "--pgdata", server.data_dir, "--auth", "trust",
            "--username", SUPERUSER, "--encoding", "UTF8", "--locale", "C", "--no-sync",
        )  # fmt: skip
        server = _start_on_a_free_port(server)
        _wait_until_ready(server, START_TIMEOUT_S)
        _create_database(server.url("postgres"), DATABASE)
    except (RuntimeError, OSError, subprocess.TimeoutExpired, psycopg2.Error) as error:
        log = server.log_tail()
        stop_server(server)
        pytest.fail(f"the PostgreSQL test server did not start: {error}\n--- server log ---\n{log}")
    return server


def _postmaster_pid(server: PostgresServer) -> int | None:
    try:
        return int((server.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None  # never started, or already gone


def _is_running(pid: int) -> bool:
    """Whether ``pid`` is alive; an exited child waiting to be reaped (a zombie) is not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_for_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _is_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_server(server: PostgresServer) -> None:
    """Stop the server at once (no checkpoint: the data is thrown away) and remove its folder.

    Falls back to SIGKILL on the postmaster when ``pg_ctl stop`` fails or the server
    outlives it.
    """
    pid = _postmaster_pid(server)
    if pid is not None:
        with suppress(RuntimeError, subprocess.TimeoutExpired):  # then the SIGKILL below
            _run(
                server, server.binaries.pg_ctl, "stop", "--pgdata", server.data_dir,
                "--mode", "immediate", "--wait", timeout_s=30,
            )  # fmt: skip
        if not _wait_for_exit(pid, timeout_s=5.0):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_for_exit(pid, timeout_s=5.0)
    shutil.rmtree(server.root, ignore_errors=True)


def new_database(url: str, name: str) -> str:
    """Create the empty database ``name`` on the server ``url`` points at; return its URL.

    ``name`` must be a lower-case SQL identifier (letters, digits, underscores, at most 63
    characters). Creating a database that exists raises ``psycopg2.errors.DuplicateDatabase``.
    """
    if not isinstance(name, str) or DATABASE_NAME.fullmatch(name) is None:
        raise ValueError(
            "The 'name' parameter of new_database must be a lower-case SQL identifier "
            f"matching {DATABASE_NAME.pattern}. Got {name!r} instead."
        )
    _create_database(url, name)
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session, stopped and removed at its end."""
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql+psycopg2://gradwise@127.0.0.1:PORT/gradwise_test`` on the session server."""
    return postgres_server.url()
