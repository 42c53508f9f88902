"""Issue 13, migration: a client that follows the VM to a migration target
shows the target's scanout at once, the guest idle, on both variants.

Two shim servers in their own processes play QEMU's source and target
(ui/spice-core.c): the target is started as with -incoming (the VM does
not run), seamless-migration= is the same on both; a real spice-gtk client
(all its channels connected, as remote-viewer) shows the source's picture;
then client_migrate_info (spice_server_migrate_connect, waited for until
spice reports the client connected to the target), the migration's setup
(spice_server_migrate_start), the target loads the device state (its
scanout), the source stops and ends the migration
(spice_server_migrate_end(completed)), the target runs.  No guest draw
happens on either side after that.

The target's scanout is another picture than the source's last frame: a
guest that updated its display after the source's last draw (QEMU 10.1's
remote mode draws only from the refresh tick, and the source stops at any
point) leaves the target's scanout newer than what the client shows.

- semi-seamless (QEMU's default, seamless-migration=off): the client
  links the target's channels as new ones after the source's MIGRATE_END,
  dcc_start() runs as for any new client: patched sends the initial frame,
  stock sends nothing (the client keeps the source's last picture).
- seamless (seamless-migration=on): the target's display channel client
  waits for the migrate data and dcc_start() returns early; the series
  pushes the initial frame once the migrate data is in (core, "dcc: Send
  the GL scanout to a client migrated seamlessly"), stock sends nothing.

Stock's client never shows the target's picture: it is given the stated
window (NO_FRAME_WINDOW), patched the generous FRAME_TIMEOUT.
"""
from __future__ import annotations

import pytest

from spice_initial_draw import patterns
from spice_initial_draw.events import EventKind
from spice_initial_draw.testing import FRAME_TIMEOUT, NO_FRAME_WINDOW
from spice_initial_draw.testing.assertions import connect_showing, wait_shows
from spice_initial_draw.testing.expect import per_variant

SIZE = (1280, 720)
CODECS = ["mjpeg", "h264"]
STOCK_KEEPS_SOURCE_PICTURE = (
    "the target sends a client that followed a migration nothing until the "
    "guest draws: it keeps the source's last picture")


def migrate(src, dst, cli, target_image) -> None:
    """QEMU's migration of the VM from src to dst, the client following it;
    returns when the client is done (its migration state is back to none)."""
    src.migrate_info(dst)
    src.wait_event(EventKind.MIGRATE_CONNECTED, timeout=FRAME_TIMEOUT)
    src.migrate_start()
    dst.display(0).scanout(target_image)   # the device state loaded
    src.set_running(False)
    src.migrate_end(True)
    dst.set_running(True)
    src.wait_event(EventKind.MIGRATE_END_DONE, timeout=FRAME_TIMEOUT)
    cli.wait_migrated(FRAME_TIMEOUT)


def run_migration(make_server, make_client, variant, codec, seamless):
    src = make_server(codecs=f"gstreamer:{codec}", variant=variant,
                      seamless_migration=seamless)
    dst = make_server(codecs=f"gstreamer:{codec}", variant=variant,
                      seamless_migration=seamless, incoming=True)
    source_image = patterns.quadrants(*SIZE)
    target_image = patterns.bars(*SIZE)
    cli = make_client(src, codec, all_channels=True)
    # set-up: a lone frame can be dropped as late by the client, stock does not
    # send it again, and stock's H.264 shows one only once the next one starts
    src.display(0).scanout(source_image)
    connect_showing(src, cli, source_image, draws=5)
    migrate(src, dst, cli, target_image)
    # the client's display channel is now the target's
    assert dst.display_connections(), "the client's display channel did not link to the target"
    wait_shows(cli, target_image,
               per_variant(variant, patched=FRAME_TIMEOUT, stock=NO_FRAME_WINDOW))
    assert not dst.events(EventKind.DRAW), "the target's guest drew"
    assert not dst.fatal_errors() and not src.fatal_errors()


@pytest.mark.stock_defect(STOCK_KEEPS_SOURCE_PICTURE, raises=AssertionError)
@pytest.mark.parametrize("codec", CODECS)
def test_semi_seamless_target_shows_scanout(make_server, make_client, variant, codec):
    """QEMU's default: the target's channels are new to it, dcc_start()
    pushes the initial frame (patched)."""
    run_migration(make_server, make_client, variant, codec, seamless=False)


@pytest.mark.stock_defect(STOCK_KEEPS_SOURCE_PICTURE, raises=AssertionError)
@pytest.mark.parametrize("codec", CODECS)
def test_seamless_target_shows_scanout(make_server, make_client, variant, codec):
    """seamless-migration=on: the target's display channel client waits
    for the migrate data before it sends anything; the series pushes the
    initial frame once the data is in (core, "dcc: Send the GL scanout to a
    client migrated seamlessly")."""
    run_migration(make_server, make_client, variant, codec, seamless=True)
