"""A local PostgreSQL for the Prefect server: initialised once, started and stopped by this CLI.

SQLite serialises writes, and a server on it answers "database is locked" once a sweep's many
task runs change state together; Prefect recommends PostgreSQL beyond that (with its `pg_trgm`
extension installed and enabled). `plantcad-flows server --database postgres` uses the
PostgreSQL server binaries of the host (Debian's `postgresql` package: `initdb` and `pg_ctl`
under `/usr/lib/postgresql/VERSION/bin`) on a cluster of its own under
`~/.local/share/plantcad-flows/pg` (for root, which PostgreSQL refuses to run as,
`/var/lib/plantcad-flows/pg`, run as the `postgres` user):

* `data/`: the cluster, made by `initdb` with one role, `prefect`, whose password is generated
  once and kept in `password` (mode 0600). It listens on 127.0.0.1 only, with password (scram)
  authentication for every connection.
* database `prefect`, with `CREATE EXTENSION pg_trgm` run once it exists.
* the server's pool settings (`POOL_SIZE`, `MAX_OVERFLOW`) are the ones the production compose
  file (`infra/server/docker-compose.yaml`) sets; `tests/test_postgres.py` checks they agree.

SQLite stays the default for `make demo` and the test suite.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from plantcad_flows.cluster.processes import LOOPBACK, free_port
from plantcad_flows.errors import ValidationError

DEFAULT_DIR = Path("~/.local/share/plantcad-flows/pg")
ROOT_DIR = Path("/var/lib/plantcad-flows/pg")
USER = DATABASE = "prefect"
# SQLAlchemy pool of the Prefect server (API and services share it); PostgreSQL's default
# max_connections (100) leaves room for POOL_SIZE + MAX_OVERFLOW. Same values in infra/server.
POOL_SIZE = 20
MAX_OVERFLOW = 10
INSTALL_HINT = (
    "install PostgreSQL's server binaries: `apt-get install postgresql` (Debian/Ubuntu), "
    "`dnf install postgresql-server postgresql-contrib`, or `brew install postgresql`"
)


def default_dir() -> Path:
    return ROOT_DIR if os.geteuid() == 0 else DEFAULT_DIR.expanduser()


def find_bin_dir() -> Path:
    """The directory holding `initdb` and `pg_ctl`: on PATH, or Debian's newest version.

    Raises:
        ValidationError: naming what to install when there is none.
    """
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).parent] if on_path else []
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2] or 0))
    candidates += [Path(p) for p in reversed(versions)]
    for d in candidates:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    raise ValidationError("--database", "postgres", "initdb and pg_ctl not found", INSTALL_HINT)


def server_settings(url: str) -> dict[str, str]:
    """The environment of a Prefect server on the PostgreSQL at `url`."""
    return {
        "PREFECT_API_DATABASE_CONNECTION_URL": url,
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": str(POOL_SIZE),
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": str(MAX_OVERFLOW),
    }


@dataclass
class LocalPostgres:
    """One PostgreSQL cluster under `root`; `start` initialises it the first time."""

    root: Path
    bin_dir: Path
    port: int | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def password(self) -> str:
        return (self.root / "password").read_text().strip()

    @property
    def url(self) -> str:
        """The asyncpg URL the Prefect server uses (it holds the password: never print it)."""
        return f"postgresql+asyncpg://{USER}:{self.password}@{LOOPBACK}:{self.port}/{DATABASE}"

    def _owner(self) -> pwd.struct_passwd | None:
        """The user PostgreSQL runs as: this one, or `postgres` for root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            raise ValidationError(
                "--database",
                "postgres",
                "PostgreSQL refuses to run as root and there is no `postgres` user",
                "run as a normal user, or " + INSTALL_HINT,
            ) from None

    def _run(self, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        owner = self._owner()

        def demote() -> None:
            os.setgid(owner.pw_gid)
            os.setuid(owner.pw_uid)

        return subprocess.run(
            [str(a) for a in args],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
            cwd=self.root,
            env={**os.environ, **(env or {})},
            preexec_fn=demote if owner else None,
        )

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        owner = self._owner()
        if owner is None:
            return
        for parent in self.root.resolve().parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                raise ValidationError(
                    "--pg-dir",
                    str(self.root),
                    f"the postgres user cannot reach it ({parent} is not traversable)",
                    f"use a directory under a traversable path, e.g. {ROOT_DIR}",
                )
        os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.root.chmod(0o700)

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists() and (self.root / "password").exists()

    def _initdb(self) -> None:
        self._prepare_root()
        pwfile = self.root / "password"
        pwfile.write_text(secrets.token_urlsafe(24) + "\n")
        pwfile.chmod(0o600)
        owner = self._owner()
        if owner:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        shutil.rmtree(self.data, ignore_errors=True)
        self._run(
            self.bin_dir / "initdb", "-D", self.data, "-U", USER, "-E", "UTF8", "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
        )  # fmt: skip

    def running_port(self) -> int | None:
        """The port of this cluster's running server (from `postmaster.pid`), or None."""
        if self._run(self.bin_dir / "pg_ctl", "-D", self.data, "status", check=False).returncode != 0:
            return None
        lines = (self.data / "postmaster.pid").read_text().splitlines()
        return int(lines[3])

    def start(self, timeout: float = 60) -> LocalPostgres:
        """Initialise (the first time) and start the cluster, create the database and `pg_trgm`.
        A cluster already running is reused on its port."""
        if not self.initialised():
            self._initdb()
        running = self.running_port()
        if running is not None:
            self.port = running
        else:
            self.port = self.port or free_port()
            options = (
                f"-p {self.port} -c listen_addresses={LOOPBACK} -c unix_socket_directories='{self.data}'"
            )
            try:
                self._run(
                    self.bin_dir / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", str(int(timeout)),
                    "-o", options, "start",
                )  # fmt: skip
            except subprocess.CalledProcessError as e:
                tail = self.log.read_text()[-800:] if self.log.exists() else ""
                raise RuntimeError(
                    f"PostgreSQL did not start under {self.data}: {e.stderr.strip()} {tail}"
                ) from e
        self._ensure_database()
        return self

    def _psql(self, database: str, sql: str) -> str:
        psql = self.bin_dir / "psql"
        exe = psql if psql.exists() else shutil.which("psql") or "psql"
        out = self._run(
            exe, "-h", LOOPBACK, "-p", str(self.port), "-U", USER, "-d", database, "-tAc", sql,
            env={"PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"},
        )  # fmt: skip
        return out.stdout.strip()

    def _ensure_database(self) -> None:
        deadline = time.monotonic() + 30
        while True:  # pg_ctl -w returns once the postmaster is up; connections follow shortly
            try:
                exists = self._psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        if exists != "1":
            self._psql("postgres", f"CREATE DATABASE {DATABASE} OWNER {USER}")
        try:
            self._psql(DATABASE, "CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except subprocess.CalledProcessError as e:
            raise ValidationError(
                "--database",
                "postgres",
                f"the pg_trgm extension cannot be created: {e.stderr.strip()}",
                "install PostgreSQL's contrib extensions (Debian's postgresql package has them)",
            ) from None

    def stop(self, timeout: float = 60) -> None:
        """Stop the cluster (fast shutdown: open connections are closed, data is kept)."""
        if self.data.exists():
            self._run(
                self.bin_dir / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", str(int(timeout)), "stop",
                check=False,
            )  # fmt: skip


def local_postgres(root: str | os.PathLike | None = None, port: int | None = None) -> LocalPostgres:
    """The local cluster under `root` (default: `default_dir()`), not started yet.

    Raises:
        ValidationError: PostgreSQL is not installed (naming what to install).
    """
    return LocalPostgres(Path(root).expanduser() if root else default_dir(), find_bin_dir(), port)
