"""The `roster` command: one subcommand per process, and `dev` for the whole local stack."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from service.logs import configure_logging
from service.settings import Settings, SettingsError, load_settings, require

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="roster-sync: Clever rosters into the product roster.",
)


# What each process cannot run without. Only `roster dev` has local defaults: it starts the
# embedded database and broker and hands its children every setting explicitly.
DATABASE = ("database_url",)
PIPELINE = ("database_url", "kafka_bootstrap_servers")
API = (*PIPELINE, "webhook_secrets", "admin_token")


def _settings(*needs: str) -> Settings:
    """The settings, or one line on stderr (exit code 2) naming the invalid or missing one."""
    try:
        settings = load_settings()
        require(settings, *needs)
    except SettingsError as exc:
        typer.echo(f"roster: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level)
    return settings


@contextmanager
def _reaching() -> Iterator[None]:
    """A dependency the command cannot reach (service/reach.py) ends it with one line on stderr
    (what, where without credentials, what to check) and exit code 3."""
    from service.reach import EXIT_UNREACHABLE, Unreachable

    try:
        yield
    except Unreachable as exc:
        typer.echo(f"roster: {exc}", err=True)
        raise typer.Exit(EXIT_UNREACHABLE) from None


def _run(coro: object) -> Any:
    import uvloop

    from service.gc_tuning import tune_gc

    tune_gc()
    return uvloop.run(coro)  # type: ignore[arg-type]


@app.command()
def dev(
    simulate: Annotated[
        bool,
        typer.Option(
            "--simulate",
            help="Feed the stack from a simulated Clever (seeded districts, a trickle of changes).",
        ),
    ] = False,
) -> None:
    """Run the whole local stack in the foreground: database, broker, migrations, API, consumer,
    relay and poller."""
    raise typer.Exit(_dev_code(simulate=simulate))


def _dev_code(*, simulate: bool = False) -> int:
    # Imported here only: the dev package (and the embedded database it needs) is a dev extra,
    # absent from a production image, and no other command may depend on it.
    from devstack.stack import run_dev_stack

    return run_dev_stack(_settings(), simulate=simulate)


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8300,
    seed: Annotated[int, typer.Option(help="Seed of the generated districts.")] = 1,
    districts: Annotated[int, typer.Option(help="Districts to generate.", min=0)] = 1,
    schools: Annotated[int, typer.Option(help="Schools per district.", min=1)] = 4,
    students: Annotated[int, typer.Option(help="Students per district.", min=0)] = 200,
    sections: Annotated[int, typer.Option(help="Sections per district.", min=1)] = 20,
    teachers: Annotated[
        int | None, typer.Option(help="Teachers per district [default: a quarter of sections].")
    ] = None,
    contacts: Annotated[
        int | None, typer.Option(help="Contacts per district [default: a tenth of students].")
    ] = None,
    rate_limit: Annotated[
        int, typer.Option(help="Requests a minute per token before 429.", min=1)
    ] = 1200,
    client_id: Annotated[str, typer.Option(help="The app's OAuth client id.")] = "sim-client",
    client_secret: Annotated[
        str | None, typer.Option(help="The app's OAuth client secret [default: from the seed].")
    ] = None,
) -> None:
    """Run a simulated Clever API (dev only) with seeded districts, driven through /sim/."""
    # Imported here only, like `dev`: the simulator is dev-only code.
    from devstack.simulator import CleverSimulator, Size, run

    size = Size(
        schools=schools,
        students=students,
        sections=max(sections, schools),
        teachers=teachers,
        contacts=contacts,
    )
    sim = CleverSimulator(
        seed=seed,
        districts=districts,
        size=size,
        client_id=client_id,
        client_secret=client_secret,
        rate_limit=rate_limit,
    )
    base = f"http://{host}:{port}"
    tokens = " ".join(f"{d}:{sim.token(d)}" for d in sim.district_ids)
    typer.echo(
        f"Clever simulator on {base} (seed {sim.seed}, {len(sim.district_ids)} district(s) of "
        f"{students} students); control API {base}/sim/\n"
        f"ROSTER_CLEVER_API_URL={base}\n"
        f"ROSTER_CLEVER_OAUTH_URL={base}\n"
        f"ROSTER_CLEVER_CLIENT_ID={sim.client_id}\n"
        f"ROSTER_CLEVER_CLIENT_SECRET={sim.client_secret}\n"
        f"ROSTER_CLEVER_DISTRICT_TOKENS='{tokens}'  (instead of the client id and secret)"
    )
    run(sim, host, port)


@app.command()
def api() -> None:
    """Run the HTTP API (webhook door, query API, health, metrics)."""
    import uvicorn

    from service.app import create_app
    from service.gc_tuning import tune_gc

    settings = _settings(*API)
    options: dict[str, Any] = {
        "host": settings.http_host,
        "port": settings.http_port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        # Nothing reads the client's address or scheme, so uvicorn's rewriting of them from
        # X-Forwarded-* (a middleware around every request) serves nothing: off, it saved 10-20
        # us per single-event request (3 of 3 interleaved pairs). No Server header either: no
        # need to tell callers what serves them.
        "proxy_headers": False,
        "server_header": False,
    }
    if settings.http_workers == 1:
        from service import tracing

        tracing.setup("api")
        config = uvicorn.Config(create_app(settings), **options)
        tune_gc()
        uvicorn.Server(config).run()
        return
    _serve_workers(settings, options)


def _serve_workers(settings: Settings, options: dict[str, Any]) -> None:
    """Several worker processes on one listening socket (uvicorn's supervisor restarts a worker
    that dies). Each worker builds the app from the environment (where every setting it needs
    was found); their metrics are added up through files in one directory per run."""
    import os
    import shutil
    import tempfile

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from service.metrics import MULTIPROC_DIR

    metrics_dir = tempfile.mkdtemp(prefix="roster-api-metrics-")
    os.environ[MULTIPROC_DIR] = metrics_dir
    try:
        config = uvicorn.Config(
            "service.app:app_from_environment",
            factory=True,
            workers=settings.http_workers,
            **options,
        )
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


@app.command()
def consume() -> None:
    """Run a consumer of clever.events.v1 (several may run at once: one consumer group)."""
    from consumers.main import run_consumer

    _run(run_consumer(_settings(*PIPELINE)))


@app.command()
def relay() -> None:
    """Run an outbox relay to the roster.* topics (several may run at once)."""
    from service.outbox.main import run_relay

    _run(run_relay(_settings(*PIPELINE)))


@app.command()
def poll() -> None:
    """Run an Events API poller (several may run at once: districts are leased, one poller each)."""
    from service.pull.main import run_poller

    _run(run_poller(_settings(*PIPELINE)))


@app.command()
def schemas(
    check: Annotated[
        bool, typer.Option("--check", help="Only compare; exit 1 if a file is out of date.")
    ] = False,
) -> None:
    """Write the JSON Schemas and the AsyncAPI document generated from the models in schemas/."""
    from schemas.artifacts import rendered
    from service.paths import project_root

    root = project_root() / "schemas"
    stale = []
    for path, content in sorted(rendered().items()):
        target = root / path
        if target.exists() and target.read_text() == content:
            continue
        stale.append(path)
        if not check:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
    verb = "out of date" if check else "written"
    typer.echo(f"roster schemas: {len(stale)} {verb}" + "".join(f"\n  {p}" for p in stale))
    if check and stale:
        raise typer.Exit(1)


@app.command()
def migrate(revision: str = typer.Argument("head", help="Alembic revision to upgrade to")) -> None:
    """Apply the database migrations (Alembic) up to a revision."""
    from service import reach
    from service.db.engine import database_url
    from service.db.migrate import upgrade

    url = database_url(_settings(*DATABASE))
    with _reaching():
        _run(reach.check(reach.database(url)))
    upgrade(url, revision)
    typer.echo(f"roster migrate: database at {revision}")


@app.command()
def redrive(
    event_id: Annotated[
        list[str] | None, typer.Option("--event-id", help="Only these ids (repeatable).")
    ] = None,
) -> None:
    """Send dead-lettered events through the consumer again, once their cause is fixed."""
    from consumers.redrive import redrive as run_redrive
    from service import reach
    from service.db.engine import database_url, make_engine
    from service.kafka.config import bootstrap_servers, topic_durability

    settings = _settings(*PIPELINE)

    async def go() -> None:
        await reach.check(
            reach.kafka(bootstrap_servers(settings)), reach.database(database_url(settings))
        )
        engine = make_engine(database_url(settings), pool_size=1)
        try:
            report = await run_redrive(
                bootstrap_servers(settings),
                engine,
                event_id or None,
                topic_durability(settings),
            )
        finally:
            await engine.dispose()
        typer.echo(
            f"roster redrive: {report.redriven} re-published of {report.read} "
            f"dead letters ({report.not_dead} no longer dead-lettered, "
            f"{report.unidentifiable} without an event id)"
        )

    with _reaching():
        _run(go())


@app.command()
def backfill(
    district_id: Annotated[str, typer.Argument(help="The Clever id of the district")],
    no_archive: Annotated[
        bool, typer.Option("--no-archive", help="Do not archive records the sync misses.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Archive even past ROSTER_BACKFILL_MAX_ARCHIVE_SHARE."),
    ] = False,
) -> None:
    """Backfill a district from Clever's Data API, showing its progress (or follow the one
    running). Runs it here if no poller holds the district. Exit code: 0 succeeded, 4 guarded
    (nothing archived: more than the allowed share was missing; --force archives), 1 failed,
    2 no token for the district, 3 the database or Kafka cannot be reached."""
    from service.pull.command import NoToken, backfill_command
    from service.pull.progress import BackfillDisplay, exit_code

    settings = _settings(*PIPELINE)
    display = BackfillDisplay()

    async def go() -> dict[str, Any]:
        from service import reach
        from service.db.engine import database_url
        from service.kafka.config import bootstrap_servers

        await reach.check(
            reach.database(database_url(settings)), reach.kafka(bootstrap_servers(settings))
        )
        with display:
            return await backfill_command(
                settings,
                district_id,
                archive_missing=not no_archive,
                force=force,
                show=display.update,
            )

    try:
        with _reaching():
            ended = _run(go())
    except NoToken as exc:
        typer.echo(f"roster backfill: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo(
            "roster backfill: interrupted; the backfill stays running and is resumed by the "
            "district's poller or the next `roster backfill`",
            err=True,
        )
        raise typer.Exit(130) from None
    typer.echo(display.summary(ended))
    raise typer.Exit(exit_code(ended["status"]))


assignments_app = typer.Typer(
    no_args_is_help=True,
    help="Program assignments: the same operations as /v1/program-assignments.",
)
app.add_typer(assignments_app, name="assignments")


def _with_connection(settings: Settings, work: Any, *, commit: bool = False) -> Any:
    """Runs `work(connection)` in one unit of work (committed if asked) and returns its result."""
    from service import reach
    from service.db.engine import database_url, make_engine
    from service.db.uow import UnitOfWork

    async def go() -> Any:
        await reach.check(reach.database(database_url(settings)))
        engine = make_engine(database_url(settings), pool_size=1)
        try:
            async with UnitOfWork(engine) as uow:
                result = await work(uow.connection)
                if commit:
                    await uow.commit()
                return result
        finally:
            await engine.dispose()

    with _reaching():
        return _run(go())


@app.command()
def programs() -> None:
    """List the program catalog (code, single-school flag, name)."""
    from service.programs import store

    for row in _with_connection(_settings(*DATABASE), store.catalog_rows):
        flag = "single-school" if row["single_school"] else "-"
        typer.echo(f"{row['code']:<28} {flag:<14} {row['name']}")


@assignments_app.command("list")
def assignments_list() -> None:
    """List every program assignment."""
    from service.programs import assignments

    for a in _with_connection(_settings(*DATABASE), assignments.list_assignments):
        typer.echo(f"{a['id']}  {a['program']:<28} {a['scope']:<8} {a['scope_id']}")


@assignments_app.command("add")
def assignments_add(
    program: Annotated[str, typer.Argument(help="A program code (see `roster programs`)")],
    scope: Annotated[str, typer.Argument(help="district, school, section or student")],
    scope_id: Annotated[str, typer.Argument(help="The Clever id of the scope")],
) -> None:
    """Assign a program; re-checks every student in the scope (idempotent)."""
    from service.programs import assignments

    async def add(conn: Any) -> Any:
        return await assignments.add_assignment(conn, program, scope, scope_id)

    try:
        result = _with_connection(_settings(*DATABASE), add, commit=True)
    except ValueError as exc:  # unknown program or scope
        typer.echo(f"roster assignments: {exc}", err=True)
        raise typer.Exit(2) from None
    a = result.assignment
    verb = "created" if result.created else "exists"
    typer.echo(
        f"{verb} {a['id']}  {a['program']} {a['scope']} {a['scope_id']} "
        f"({result.rechecked} students re-checked, {len(result.decisions)} alert changes)"
    )


@assignments_app.command("remove")
def assignments_remove(assignment_id: str) -> None:
    """Remove an assignment; re-checks every student in its scope."""
    from service.programs import assignments

    async def remove(conn: Any) -> Any:
        return await assignments.remove_assignment(conn, assignment_id)

    steps = _with_connection(_settings(*DATABASE), remove, commit=True)
    if steps is None:
        typer.echo(f"roster assignments: no assignment {assignment_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed {assignment_id} ({len(steps)} alert changes)")


def main() -> None:
    app(prog_name="roster")


if __name__ == "__main__":
    main()
