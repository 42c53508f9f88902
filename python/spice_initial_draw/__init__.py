"""spice_initial_draw: drive a (patched) spice-server 0.16 the way QEMU
does, through the C shim _shim, and watch it with a real spice-gtk client.

    from spice_initial_draw import Server, Client, patterns
    with Server(codecs="gstreamer:mjpeg", variant="stock") as srv:
        d = srv.display(0)
        d.scanout(patterns.quadrants())
        with Client.for_server(srv) as cli:
            cli.wait_ready()
            d.draw().wait()
            cli.wait_frames(1)
"""
from __future__ import annotations

from . import patterns
from .client import Client, ClientEvent
from .errors import (
                     ClientError,
                     DrawBusy,
                     DrawTimeout,
                     NoScanout,
                     ServerCrashed,
                     ShimError,
                     SidError,
                     VariantError,
)
from .events import Event, EventKind
from .frames import Frame
from .info import build_info, loaded_library, spice_server_version
from .server import QEMU_10_1_REMOTE, QEMU_DIRECT, Display, DrawHandle, Server

__all__ = [
    "QEMU_10_1_REMOTE", "QEMU_DIRECT", "Client", "ClientError", "ClientEvent", "Display", "DrawBusy",
    "DrawHandle", "DrawTimeout", "Event", "EventKind", "Frame", "NoScanout",
    "Server", "ServerCrashed", "ShimError", "SidError", "VariantError",
    "build_info", "loaded_library", "patterns", "spice_server_version",
]
