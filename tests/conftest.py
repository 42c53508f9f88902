"""Shared fixtures of the harness tests: real spice-server (shim), real
spice-gtk client, no mocks."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spice_initial_draw import Client, Server
from spice_initial_draw.events import EventKind

REPO = Path(__file__).resolve().parent.parent
TOP = Path(os.environ.get("SID_TOP", REPO))
VARIANTS = ("stock", "patched")
VIDEO_CODECS = ("mjpeg", "vp8", "vp9", "h264")

# Stated windows for "no frame arrived" assertions, in seconds.
NO_FRAME_WINDOW = 5.0
FRAME_TIMEOUT = 15.0


def stock_defect(request: pytest.FixtureRequest, variant: str, reason: str,
                 raises: type[BaseException] | tuple[type[BaseException], ...]
                 ) -> None:
    """Mark the running test xfail(strict=True) on the stock variant: stock
    0.16.0 fails it, in the way `reason` says and with `raises`, and a stock
    pass would be reported as an error (XPASS strict)."""
    if variant == "stock":
        request.applymarker(pytest.mark.xfail(
            strict=True, raises=raises, reason=f"stock 0.16.0: {reason}"))


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_server() -> Iterator[Callable[..., Server]]:
    """Factory of servers, closed at teardown; a fatal shim error (a
    completion QEMU would crash on) fails the test."""
    servers: list[tuple[Server, bool]] = []

    def make(expect_fatal: bool = False, **kwargs: object) -> Server:
        srv = Server(**kwargs)  # type: ignore[arg-type]
        servers.append((srv, expect_fatal))
        return srv

    yield make
    fatal = []
    for srv, expect_fatal in servers:
        if srv.alive() and not expect_fatal:
            fatal += [str(e) for e in srv.events(EventKind.FATAL)]
        srv.close()
    assert not fatal, f"fatal shim errors: {fatal}"


@pytest.fixture
def make_client() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(server: Server, codec: str | None = None, **kwargs: object) -> Client:
        cli = Client.for_server(server, codec, **kwargs)
        clients.append(cli)
        return cli

    yield make
    for cli in clients:
        cli.close()


@pytest.fixture(scope="session")
def build_variant(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """build_variant(NAME): make sure the sanitizer variant NAME is built,
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
