"""Shared fixtures of the harness tests: real spice-server (shim), real
spice-gtk client, no mocks."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spice_initial_draw import Client, Server
from spice_initial_draw.events import EventKind

REPO = Path(__file__).resolve().parent.parent
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
