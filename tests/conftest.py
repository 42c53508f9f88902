"""Shared fixtures of the harness tests: real spice-server (shim), real
spice-gtk client, no mocks.

Tests take the `variant` fixture ("stock", "patched").  Where the two
differ, one idiom each:
- a test that stock 0.16.0 fails outright is marked
  `@pytest.mark.stock_defect(reason, raises=Exc)`: a strict xfail on stock;
- a test that cannot run on stock (the behaviour it checks does not exist
  there) is marked `@pytest.mark.patched_only(reason)`: skipped on stock;
- everything else that differs by variant goes through a named assertion
  of spice_initial_draw.testing.expect, which asserts what each variant
  does (stock's defect positively) and says why they differ: no test has
  an `if variant == ...` branch.
Long runs: tests do not read `--extended` themselves; they take the
`extended` fixture, the `extended` marker, or a `repeat` parameter.
The core series alone: a test that needs no more than spice_patch/core
carries the `core_series` marker; with --extended its `variant` also takes
"core" (spice-server with that series alone, built on its first use, as
the sanitizer variants are), where it expects what patched does.
The package: a test that proves the packaged library (the idle VM's
picture, the second and the reconnecting client, completions exactly once,
Debian's QEMU) carries the `packaged` marker; with --extended its `variant`
also takes "deb" (libspice-server.so.1 of ./run deb's libspice-server1,
extracted with dpkg -x; the packages are built on first use), where it
expects what patched does."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from spice_initial_draw import Client, Server
from spice_initial_draw.errors import ServerCrashed
from spice_initial_draw.events import EventKind
from spice_initial_draw.testing import CORE_VARIANT, DEB_VARIANT, VARIANTS
from spice_initial_draw.testing.assertions import stream_evidence

# the project's top: ./run sets SID_TOP
TOP = Path(os.environ.get("SID_TOP", Path(__file__).resolve().parents[1]))

# Hypothesis profiles; --hypothesis-profile NAME overrides the choice below.
# Each run draws new schedules (Hypothesis's own "ci" profile, which it loads
# where it detects CI, would repeat the same ones); a failure prints the seed
# that --hypothesis-seed=N replays.
settings.register_profile(
    "sid-ci", max_examples=200, stateful_step_count=6, deadline=None,
    derandomize=False, database=None, print_blob=True,
    suppress_health_check=list(HealthCheck))
settings.register_profile(
    "sid-extended", settings.get_profile("sid-ci"), max_examples=5000,
    stateful_step_count=12)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--extended", action="store_true",
                     help="also run the long cases (tests marked 'extended') and "
                          "the long repeat counts (./run test --extended)")


def is_extended(config: pytest.Config) -> bool:
    """Whether this run has --extended (tests take the `extended` fixture
    instead of reading the option)."""
    return bool(config.getoption("--extended"))


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hypothesis_profile", None) is None:
        settings.load_profile("sid-extended" if is_extended(config) else "sid-ci")
    config.addinivalue_line(
        "markers", "extended: a long case, run only with --extended")
    config.addinivalue_line(
        "markers", "stock_defect(reason, raises): stock 0.16.0 fails this test in the "
                   "way `reason` says, raising `raises`; on the stock variant it is a "
                   "strict xfail (a stock pass is reported as an error)")
    config.addinivalue_line(
        "markers", "patched_only(reason): the behaviour this test checks does not exist "
                   "on stock 0.16.0, for the `reason` given; skipped on the stock variant")
    config.addinivalue_line(
        "markers", "core_series: the test needs only the core series (spice_patch/core); "
                   "with --extended it also runs on the core variant, built on first use")
    config.addinivalue_line(
        "markers", "packaged: one of the scenarios the Debian package is proven with; "
                   "with --extended it also runs on the deb variant (./run deb's "
                   "libspice-server1), built on first use")


# runs of a test that takes a `repeat` parameter, and with --extended
REPEATS, EXTENDED_REPEATS = 1, 5
# the variants a test also runs on with --extended, by its marker
EXTENDED_VARIANTS = {"core_series": CORE_VARIANT, "packaged": DEB_VARIANT}
# the variants built on their first use in a session (build_variant)
ON_DEMAND_VARIANTS = (CORE_VARIANT, DEB_VARIANT)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # the fixture `variant`: stock and patched, and with --extended core too
    # for a test marked core_series, deb for one marked packaged; unless the
    # test parametrizes it itself
    if "variant" in metafunc.fixturenames and not any(
            "variant" in m.args[0] for m in metafunc.definition.iter_markers("parametrize")):
        more = [name for marker, name in EXTENDED_VARIANTS.items()
                if is_extended(metafunc.config)
                and metafunc.definition.get_closest_marker(marker) is not None]
        metafunc.parametrize("variant", [*VARIANTS, *more], indirect=True)
    if "repeat" in metafunc.fixturenames:
        metafunc.parametrize("repeat", range(EXTENDED_REPEATS if is_extended(metafunc.config)
                                             else REPEATS))


def pytest_collection_modifyitems(config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    skip_long = pytest.mark.skip(reason="a long case: ./run test --extended")
    for item in items:
        if item.get_closest_marker("extended") and not is_extended(config):
            item.add_marker(skip_long)
        callspec = getattr(item, "callspec", None)
        on_stock = callspec is not None and callspec.params.get("variant") == "stock"
        defect = item.get_closest_marker("stock_defect")
        if defect and on_stock:
            item.add_marker(pytest.mark.xfail(
                strict=True, raises=defect.kwargs["raises"],
                reason=f"stock 0.16.0: {defect.args[0]}"))
        patched_only = item.get_closest_marker("patched_only")
        if patched_only and on_stock:
            item.add_marker(pytest.mark.skip(
                reason=f"patched only: {patched_only.args[0]}"))


@pytest.fixture
def extended(request: pytest.FixtureRequest) -> bool:
    """Whether this run has --extended (long repeat counts)."""
    return is_extended(request.config)


@pytest.fixture
def variant(request: pytest.FixtureRequest) -> str:
    """The spice-server build the test runs on (its parameters:
    pytest_generate_tests); the core and deb variants are built on their
    first use (build_variant)."""
    if request.param in ON_DEMAND_VARIANTS:
        request.getfixturevalue("build_variant")(request.param)
    return str(request.param)


# the servers and clients a test made with the fixtures below, by server
WATCHED = pytest.StashKey[dict[Server, list[Client]]]()
# whether the test's call passed (its teardown then judges how its
# processes ended; a failed or xfailed call already has its verdict)
CALL_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """A failing test's report shows what its servers and clients logged
    about the stream (spice-server's warnings, draws and completions, the
    clients' stream creates, late frames and warnings)."""
    rep = yield
    if rep.when == "call":
        item.stash[CALL_PASSED] = rep.passed
    if rep.when == "call" and rep.failed:
        for srv, clients in item.stash.get(WATCHED, {}).items():
            try:
                evidence = stream_evidence(srv, clients)
            except Exception as e:   # the report must not fail on it
                evidence = f"(no evidence: {type(e).__name__}: {e})"
            rep.sections.append((f"{srv.variant} server {srv.pid} and its clients", evidence))
    return rep


def ended_badly(request: pytest.FixtureRequest, what: str, problems: list[str]) -> None:
    """Fail the test at teardown with `problems` (processes that died or
    exited badly), unless its call already failed or xfailed: that verdict
    stands, and its report carries the servers' output."""
    if problems and request.node.stash.get(CALL_PASSED, False):
        pytest.fail(f"{what}:\n" + "\n\n".join(problems), pytrace=False)


@pytest.fixture
def make_server(request: pytest.FixtureRequest) -> Iterator[Callable[..., Server]]:
    """Factory of servers, closed at teardown (after the clients: see
    make_client); a fatal shim error (a completion QEMU would crash on)
    fails the test, and so does a server process that died during or
    after the test (a signal, a non-zero exit, a hang at close: its exit
    status from close()), with its last output, unless the test declared
    that death its expected outcome (Server.expect_death)."""
    servers: list[tuple[Server, bool]] = []
    watched = request.node.stash.setdefault(WATCHED, {})

    def make(expect_fatal: bool = False, **kwargs: object) -> Server:
        srv = Server(**kwargs)  # type: ignore[arg-type]
        servers.append((srv, expect_fatal))
        watched[srv] = []
        return srv

    yield make
    fatal = []
    problems = []
    for srv, expect_fatal in servers:
        if srv.alive() and not expect_fatal:
            try:
                fatal += [str(e) for e in srv.events(EventKind.FATAL)]
            except ServerCrashed:   # it died just now: judged below
                pass
        srv.close()
        problem = srv.exit_problem()
        if problem is not None and srv.death_expected is None:
            problems.append(problem)
    assert not fatal, f"fatal shim errors: {fatal}"
    ended_badly(request, "a server process died during or after the test", problems)


@pytest.fixture
def make_client(request: pytest.FixtureRequest, make_server: Callable[..., Server]
                ) -> Iterator[Callable[..., Client]]:
    """Factory of clients, closed at teardown before the servers (it
    depends on make_server, so it is torn down first: a server crash that
    a client's disconnect causes is then seen by make_server); a client
    process that died or exited with a non-zero status fails the test,
    with its last output (one that vanish() killed is expected)."""
    clients: list[Client] = []
    watched = request.node.stash.setdefault(WATCHED, {})

    def make(server: Server, codec: str | None = None, **kwargs: object) -> Client:
        cli = Client.for_server(server, codec, **kwargs)
        clients.append(cli)
        watched.setdefault(server, []).append(cli)
        return cli

    yield make
    problems = []
    for cli in clients:
        cli.close()
        if (problem := cli.exit_problem()) is not None:
            problems.append(problem)
    ended_badly(request, "a client process died during the test", problems)


@pytest.fixture(scope="session")
def build_variant(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """build_variant(NAME): make sure the on-demand variant NAME (a
    sanitizer variant, core, or deb: ./run deb's package) is built,
    building it on its first use in the session with the tools' entry point,
    ./run build --variant NAME (set-up leaves these variants out; meson
    rebuilds only what changed, so an up-to-date one takes a second). Its
    output is shown as it goes. A failed build fails every test that needs
    the variant, with the end of its output: a missing variant never skips."""
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    failures: dict[str, str | None] = {}

    def say(line: str) -> None:
        if tr is not None:
            tr.write_line(line)

    def build(name: str) -> None:
        if name not in failures:
            cmd = [str(TOP / "run"), "build", "--variant", name]
            say(f"building the {name} variant on its first use: ./run build --variant {name}")
            lines: list[str] = []
            with subprocess.Popen(cmd, cwd=TOP, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True,
                                  errors="replace") as proc:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.append(line.rstrip())
                    say("    " + line.rstrip())
            failures[name] = None if proc.returncode == 0 else (
                f"the {name} variant could not be built: ./run build --variant "
                f"{name} exited with {proc.returncode}:\n" + "\n".join(lines[-30:]))
        failure = failures[name]
        if failure is not None:
            pytest.fail(failure, pytrace=False)

    return build
