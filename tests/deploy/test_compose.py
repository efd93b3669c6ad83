"""docker-compose.yml and the Dockerfile, checked where no Docker engine runs.

- the compose file against the compose-spec JSON schema (check-jsonschema's vendored copy);
- the Dockerfile with hadolint, and what its image installs (the wheel of the same sources);
- no secret with a default, each listed in ``.env.example``, none written in the file, a
  health check on every long-running container and no container as root;
- the stack itself: every job and service of the compose file started here as a process
  with the command and environment the file gives it (interpolated from a test-made
  ``.env``, hosts pointed at the local PostgreSQL and the test broker): the PostgreSQL init
  script makes the roles and databases, the topics and migration jobs exit 0, the services
  answer ``/readyz`` and their compose health checks pass, in the order ``depends_on`` gives.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from shared.broker import die_with_parent
from shared.processes import ServiceRun, log_tail, wait_until_up
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
INIT_ROLES = ROOT / "deploy" / "postgres" / "init-roles.sh"
BIN = Path(sys.executable).parent
"""The venv's executables: ``incentives``, ``uvicorn``, ``python``, as on the image's PATH."""

SERVICES = ("oversight", "voucher", "taxcredit", "fund")
PROVIDED = {"kafka", "postgres"}
"""Containers whose part the tests' own servers play: the broker and PostgreSQL."""
NON_ROOT_IMAGE_UID = "10001"

# --- the compose file as Compose reads it ---------------------------------------------------

REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[?-])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)
"""Compose's interpolation: ``$$``, ``${NAME}``, ``${NAME:?message}``, ``${NAME:-default}``
(and their forms without the colon), ``$NAME``."""


class MissingVariable(Exception):
    """A ``${NAME:?message}`` without its value: Compose refuses the file, naming it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """``value`` with its references replaced as ``docker compose config`` does."""

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        op, arg, found = match["op"], match["arg"] or "", variables.get(name)
        empty = found is None or found == ""
        if op in (":?", "?") and (found is None or (op == ":?" and empty)):
            raise MissingVariable(name, arg)
        if (op == ":-" and empty) or (op == "-" and found is None):
            return arg
        return found or ""

    return REFERENCE.sub(one, value)


def references(value: Any) -> Iterator[re.Match[str]]:
    """Every variable reference in a loaded YAML value, however deep."""
    if isinstance(value, str):
        yield from (m for m in REFERENCE.finditer(value) if not m["escaped"])
    elif isinstance(value, dict):
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def load_compose() -> dict[str, Any]:
    """The file with its anchors and merge keys resolved, as Compose sees it."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def env_example() -> dict[str, str]:
    """The variables ``.env.example`` names, with the values it gives them."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            found[name.strip()] = value.strip()
    return found


def made_env() -> dict[str, str]:
    """A ``.env`` as an operator makes it from ``.env.example``'s instructions."""
    values = {}
    for name in env_example():
        if name.endswith("_SIGNING_KEY"):
            values[name] = base64.b64encode(secrets.token_bytes(32)).decode()
        else:
            values[name] = secrets.token_hex(32)
    return values


# --- static checks ----------------------------------------------------------------------------


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)


def test_the_compose_file_follows_the_compose_spec(tmp_path: Path) -> None:
    check = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    result = _run([*check, str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr
    # and the check can fail: a misspelt key is refused
    typo = tmp_path / "docker-compose.yml"
    typo.write_text(COMPOSE.read_text().replace("healthcheck:", "healthchek:", 1))
    assert _run([*check, str(typo)]).returncode != 0


def test_the_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = [str(BIN / "hadolint"), "--no-color", "--failure-threshold", "info"]
    result = _run([*hadolint, str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    unpinned = tmp_path / "Dockerfile"
    unpinned.write_text("FROM python:latest\nRUN pip install uvicorn\n")
    assert _run([*hadolint, str(unpinned)]).returncode != 0


def test_every_secret_is_required_listed_and_never_written_down() -> None:
    compose = load_compose()
    found = list(references(compose))
    assert found, "the compose file reads no variable: where are its secrets?"
    for match in found:
        assert match["op"] == ":?", (
            f"{match[0]}: every variable is required (${{NAME:?message}}), none has a default"
        )
    listed = env_example()
    assert {m["name"] for m in found} == set(listed), ".env.example lists what compose reads"
    assert all(value == "" for value in listed.values()), ".env.example holds no real value"

    secret_key = re.compile(r"PASSWORD|SECRET|SIGNING_KEY|TOKEN")
    required = re.compile(r"^\$\{[A-Za-z_]\w*:\?[^}]*\}$")
    password_in_url = re.compile(r"://[^:/@]+:(?P<password>[^@]*)@")
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            text = str(value)
            if secret_key.search(key):
                assert required.match(text), f"{name}.{key} is a literal, not ${{NAME:?}}"
            if url := password_in_url.search(text):
                assert required.match(url["password"]), f"{name}.{key}: a password in the URL"

    # Compose refuses to start a container while one of its secrets is unset or empty
    voucher = compose["services"]["voucher"]["environment"]
    env = made_env()
    interpolate(voucher["INCENTIVES_JWT_SECRET"], env)
    for missing in (None, ""):
        without = {k: v for k, v in env.items() if k != "INCENTIVES_JWT_SECRET"}
        if missing is not None:
            without["INCENTIVES_JWT_SECRET"] = missing
        with pytest.raises(MissingVariable, match="INCENTIVES_JWT_SECRET"):
            interpolate(voucher["INCENTIVES_JWT_SECRET"], without)


def _root(user: str) -> bool:
    return user.split(":")[0] in ("", "0", "root")


def test_every_container_is_health_checked_and_runs_as_no_root() -> None:
    compose = load_compose()
    for name, service in compose["services"].items():
        assert not _root(str(service.get("user", ""))), f"{name} runs as root"
        if service.get("restart") != "no":  # a long-running container, not a one-shot job
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] == NON_ROOT_IMAGE_UID, "the image's last USER"
    for name in SERVICES:
        assert compose["services"][name]["user"].split(":")[0] == NON_ROOT_IMAGE_UID
        depends = compose["services"][name]["depends_on"]
        for job in (f"migrate-{name}", "topics"):
            assert depends[job] == {"condition": "service_completed_successfully"}
        assert depends["kafka"] == {"condition": "service_healthy"}


def test_the_image_holds_every_file_the_services_read(tmp_path: Path) -> None:
    """The image installs the wheel built from what the Dockerfile copies: every file of
    ``shared/`` and ``services/`` (catalogues, rate tables, pages, migrations) must be in it,
    or a service would miss it in production and nowhere else (the tests run editable)."""
    dockerfile = DOCKERFILE.read_text()
    build_stage = dockerfile.split("\nFROM ", 2)[1]
    sources = []
    for line in build_stage.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            *paths, _target = line.split()[1:]
            sources += paths
    assert {"pyproject.toml", "shared", "services"} <= set(sources)
    (tmp_path / "src").mkdir()
    for source in sources:  # what the build context gives (.dockerignore: no __pycache__)
        if (ROOT / source).is_dir():
            shutil.copytree(
                ROOT / source,
                tmp_path / "src" / source,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        else:
            shutil.copy(ROOT / source, tmp_path / "src" / source)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-cache-dir"]
    # with the venv's setuptools (pinned in dev): nothing downloads
    build = ["--no-build-isolation", "--wheel-dir", str(tmp_path / "wheel")]
    result = _run([*pip_wheel, *build, str(tmp_path / "src")])
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        path.relative_to(tmp_path / "src").as_posix()
        for top in ("shared", "services")
        for path in (tmp_path / "src" / top).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert sorted(wanted - in_wheel) == [], "pyproject's package data leaves these out"


def test_the_postgres_init_script_is_valid_bash() -> None:
    assert _run(["bash", "-n", str(INIT_ROLES)]).returncode == 0
    assert os.access(INIT_ROLES, os.X_OK), "the postgres image runs it, not sources it"


# --- the stack as processes -------------------------------------------------------------------


class Stack:
    """The compose file's jobs and services as processes on this machine.

    What a container would find by name is rewritten to where the tests have it: ``kafka:9092``
    to the test broker, ``postgres:5432`` to the local server (each role and database under
    a prefix of this run's own), ``<service>:8000`` and ``--port 8000`` to a free port each.
    """

    def __init__(
        self,
        compose: dict[str, Any],
        env: dict[str, str],
        bootstrap: str,
        server: str,
        prefix: str,
        workdir: Path,
    ) -> None:
        self.compose = compose
        self.env = env
        self.bootstrap = bootstrap
        self.server = make_url(server)
        self.prefix = prefix
        self.workdir = workdir
        self.ports = {name: free_port() for name in SERVICES}
        self.topic_prefix = f"compose-{uuid.uuid4().hex[:8]}."
        self.runs: list[ServiceRun] = []

    def database_url(self, url: str) -> str:
        parsed = make_url(url)
        assert (parsed.host, parsed.port) == ("postgres", 5432), url
        return parsed.set(
            username=self.prefix + str(parsed.username),
            host=self.server.host,
            port=self.server.port,
            database=self.prefix + str(parsed.database),
        ).render_as_string(hide_password=False)

    def rewrite(self, value: str) -> str:
        value = value.replace("kafka:9092", self.bootstrap)
        for name, port in self.ports.items():
            value = value.replace(f"http://{name}:8000", f"http://127.0.0.1:{port}")
        return value

    def environment(self, name: str, drop: tuple[str, ...] = ()) -> dict[str, str]:
        """The process environment of ``name``: the compose file's, interpolated from the
        test's ``.env`` and rewritten, on a PATH that finds the venv's executables first."""
        declared = self.compose["services"][name].get("environment") or {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("INCENTIVES_")}
        env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        for key, raw in declared.items():
            if key in drop:
                continue
            value = self.rewrite(interpolate(str(raw), self.env))
            env[key] = self.database_url(value) if key == "INCENTIVES_DATABASE_URL" else value
        env["INCENTIVES_TOPIC_PREFIX"] = self.topic_prefix  # the test broker is shared
        return env

    def command(self, name: str) -> list[str]:
        argv = [str(arg) for arg in self.compose["services"][name]["command"]]
        for option, value in (("--port", str(self.ports.get(name))), ("--host", "127.0.0.1")):
            if option in argv:
                argv[argv.index(option) + 1] = value
        return argv

    def launch(self, name: str, drop: tuple[str, ...] = (), log: str | None = None) -> ServiceRun:
        log_path = self.workdir / f"{log or name}.log"
        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                self.command(name),
                env=self.environment(name, drop),
                cwd=self.workdir,  # as the image's WORKDIR: no source tree beside it
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        run = ServiceRun(name, process, f"http://127.0.0.1:{self.ports.get(name)}", log_path)
        self.runs.append(run)
        return run

    def run_jobs(self, names: list[str]) -> None:
        """Start the jobs together; each must exit 0."""
        for job in [self.launch(name) for name in names]:
            try:
                code = job.process.wait(120)
            except subprocess.TimeoutExpired:
                job.process.kill()
                raise
            assert code == 0, f"{job.name} exited {code}:\n{job.log_tail()}"

    def refused(self, cases: list[tuple[str, str | None]]) -> list[str]:
        """Start each service of ``cases`` without its setting (None: with all), together;
        each must exit non-zero. Their logs."""
        runs = [
            self.launch(name, drop=(setting,) if setting else (), log=f"{name}-without-{setting}")
            for name, setting in cases
        ]
        for run in runs:
            try:
                code = run.process.wait(120)
            except subprocess.TimeoutExpired:
                run.process.kill()
                raise AssertionError(f"{run.name} started:\n{run.log_tail()}") from None
            assert code != 0, run.log_tail()
        return [run.log_path.read_text(errors="replace") for run in runs]

    def healthcheck(self, name: str, port: int) -> subprocess.CompletedProcess[str]:
        """The compose health check of ``name``, run here against ``port``."""
        test = [str(part) for part in self.compose["services"][name]["healthcheck"]["test"]]
        kind, *argv = test
        argv = [part.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for part in argv]
        if kind == "CMD-SHELL":
            argv = ["sh", "-c", " ".join(argv)]
        assert kind in ("CMD", "CMD-SHELL"), test
        return subprocess.run(
            argv, env=self.environment(name), capture_output=True, text=True, timeout=30
        )

    def stop(self) -> None:
        for run in self.runs:
            if run.process.poll() is None:
                run.process.send_signal(signal.SIGTERM)
        for run in self.runs:
            try:
                run.process.wait(15)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()


def waves(compose: dict[str, Any], names: set[str]) -> list[list[str]]:
    """``names`` in the order ``depends_on`` starts them: each wave once the one before it is
    done (jobs exited, services healthy); a cycle or an unknown dependency fails."""
    done = set(PROVIDED)
    order = []
    while names - done:
        ready = sorted(
            name
            for name in names - done
            if set(compose["services"][name].get("depends_on") or {}) <= done
        )
        assert ready, f"depends_on cannot start {sorted(names - done)}"
        order.append(ready)
        done |= set(ready)
    return order


async def _admin(server: str, *statements: str) -> None:
    connection = await asyncpg.connect(server, timeout=5)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _tables_and_owners(url: str) -> set[str]:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)
    try:
        rows = await connection.fetch(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        )
    finally:
        await connection.close()
    return {row["tableowner"] for row in rows}


def _init_roles(server: str, env: dict[str, str], prefix: str) -> None:
    """deploy/postgres/init-roles.sh on the local server, as the postgres image runs it."""
    if shutil.which("psql") is None:
        pytest.fail("psql is needed to run deploy/postgres/init-roles.sh", pytrace=False)
    url = make_url(server)
    script_env = {
        **os.environ,
        **env,
        "PGHOST": str(url.host),
        "PGPORT": str(url.port or 5432),
        "POSTGRES_USER": str(url.username),
        "POSTGRES_DB": str(url.database),
        "INCENTIVES_DB_NAME_PREFIX": prefix,
    }
    if url.password:
        script_env["PGPASSWORD"] = str(url.password)
    result = _run([str(INIT_ROLES)], env=script_env)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.postgres
@pytest.mark.kafka
@pytest.mark.e2e
def test_the_stack_starts_as_the_compose_file_says(
    kafka_bootstrap: str, postgres_server: str, tmp_path: Path
) -> None:
    compose = load_compose()
    # The local server trusts every local connection, so the roles' passwords cannot be
    # tested here (a wrong one would pass): what is tested is that each job and service
    # connects as its own role, to its own database, and that the roles are kept apart.
    prefix = f"compose_{uuid.uuid4().hex[:8]}_"
    stack = Stack(compose, made_env(), kafka_bootstrap, postgres_server, prefix, tmp_path)
    try:
        _init_roles(postgres_server, stack.env, prefix)
        voucher_url = make_url(stack.environment("voucher")["INCENTIVES_DATABASE_URL"])
        into_fund = voucher_url.set(database=f"{prefix}fund").render_as_string(False)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # no CONNECT to another's
            asyncio.run(_tables_and_owners(into_fund))

        # before its job has run, a service in production refuses an empty database
        (log,) = stack.refused([("voucher", None)])
        assert "incentives migrate --service voucher" in log, log[-2000:]

        started: list[str] = []
        for wave in waves(compose, set(compose["services"]) - PROVIDED):
            services = [name for name in wave if compose["services"][name].get("restart") != "no"]
            began = time.monotonic()
            stack.run_jobs(sorted(set(wave) - set(services)))
            runs = [stack.launch(name) for name in services]
            wait_until_up(runs, path="/readyz", timeout=120)
            print(f"{wave}: done in {time.monotonic() - began:.1f}s")
            started += services
        assert sorted(started) == sorted(SERVICES)

        for name in SERVICES:
            port = stack.ports[name]
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
            check = stack.healthcheck(name, port)
            assert check.returncode == 0, f"{name}: {check.stdout}{check.stderr}"
            url = stack.environment(name)["INCENTIVES_DATABASE_URL"]
            assert asyncio.run(_tables_and_owners(url)) == {prefix + name}, "migrated as its role"
        assert stack.healthcheck("voucher", free_port()).returncode != 0, "the check can fail"

        # a service refuses to start without each secret it needs in production
        cases: list[tuple[str, str | None]] = [
            ("voucher", "INCENTIVES_JWT_SECRET"),
            ("oversight", "INCENTIVES_JWT_SECRET"),
            ("voucher", "INCENTIVES_DATABASE_URL"),
            ("fund", "INCENTIVES_CHECKPOINT_SIGNING_KEY"),
            ("oversight", "INCENTIVES_CHECKPOINT_KEYS"),
        ]
        began = time.monotonic()
        for (name, setting), log in zip(cases, stack.refused(cases), strict=True):
            assert setting in log, f"{name} without {setting} did not say so:\n{log[-2000:]}"
        print(f"refused without their settings in {time.monotonic() - began:.1f}s")
    except BaseException:
        for run in stack.runs:
            print(f"--- {run.log_path.name}\n{log_tail(run.log_path, 30)}")
        raise
    finally:
        stack.stop()
        names = [prefix + name for name in SERVICES]
        asyncio.run(
            _admin(
                postgres_server,
                *(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names),
                *(f'DROP ROLE IF EXISTS "{name}"' for name in names),
            )
        )
