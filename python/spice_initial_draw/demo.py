"""The idle-VM demo: scanout + draw before any client, then a real client
connects; time to first frame on the stock and the patched server."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from . import patterns
from .client import Client
from .errors import SidError
from .security import Security, make_test_ca
from .server import QEMU_10_1_REMOTE, Server


@dataclass
class DemoResult:
    variant: str
    codec: str
    first_frame_s: float | None
    window_s: float
    png: str | None
    error: str | None = None

    def line(self) -> str:
        head = f"{self.variant:8s} gstreamer:{self.codec:6s}"
        if self.error:
            return f"{head} error: {self.error}"
        if self.first_frame_s is None:
            return f"{head} no frame in {self.window_s:g} s"
        return f"{head} first frame {self.first_frame_s * 1000:.0f} ms after connect"


def idle_vm_server(variant: str, codec: str, security: Security | None = None,
                   qemu: str = QEMU_10_1_REMOTE) -> Server:
    """A server whose guest drew once, before any client: scanout of the
    1920x1080 quadrant pattern + one draw, completed, then nothing.  In
    QEMU 10.1's remote mode the guest's update is drawn by the refresh tick."""
    srv = Server(codecs=f"gstreamer:{codec}", variant=variant, security=security,
                 qemu=qemu)
    try:
        d = srv.display(0)
        d.scanout(patterns.quadrants(1920, 1080))
        if qemu == QEMU_10_1_REMOTE:
            d.update()
            d.wait_draw(1, 10).wait(10)
        else:
            d.draw().wait(10)
    except BaseException:
        srv.close()
        raise
    return srv


def run_one(variant: str, codec: str, window: float, output: str,
            keep: bool = False, security: Security | None = None,
            qemu: str = QEMU_10_1_REMOTE) -> tuple[DemoResult, Server | None]:
    try:
        srv = idle_vm_server(variant, codec, security, qemu)
    except SidError as e:
        return DemoResult(variant, codec, None, window, None, str(e)), None
    png = None
    try:
        with Client.for_server(srv, codec) as cli:
            t0 = cli.t_connect
            first = None
            try:
                frames = cli.wait_frames(1, window)
                first = frames[0].t - t0
                time.sleep(0.2)
            except TimeoutError:
                pass
            frame = cli.frame()
            if frame is not None:
                os.makedirs(output, exist_ok=True)
                suffix = "" if first is not None else "-no-frame"
                png = os.path.join(output, f"{variant}-{codec}{suffix}.png")
                frame.to_png(png)
        result = DemoResult(variant, codec, first, window, png)
    except SidError as e:
        result = DemoResult(variant, codec, None, window, None, str(e))
    if keep:
        return result, srv
    srv.close()
    return result, None


def main(serve: bool, output: str, codec: str | None = None,
         window: float = 5.0, password: str | None = None,
         qemu: str = QEMU_10_1_REMOTE) -> int:
    """password: serve on a TLS port only, with that password and a
    certificate from a throw-away CA made in OUTPUT/x509.  codec None: the
    mode's (QEMU 10.1 remote: h264; direct: mjpeg)."""
    if codec is None:
        codec = "h264" if qemu == QEMU_10_1_REMOTE else "mjpeg"
    mode = ("QEMU 10.1's remote GL mode (draws from the 30/s refresh tick, "
            "gstreamer:h264 by default)" if qemu == QEMU_10_1_REMOTE
            else "a draw per guest frame (QEMU before 10.1)")
    print(f"the shim plays {mode}")
    print("idle VM: scanout + draw of a 1920x1080 test pattern before any "
          "client connects, nothing after")
    security = None
    if password is not None:
        ca = make_test_ca(os.path.join(output, "x509"))
        security = Security(tls=ca, password=password, plain_port=False)
        print(f"TLS port only, password set; CA: {ca.ca_file}")
    kept = None
    for variant in ("stock", "patched"):
        result, srv = run_one(variant, codec, window, output,
                              keep=serve and variant == "patched", security=security,
                              qemu=qemu)
        print(result.line() + (f"  -> {result.png}" if result.png else ""),
              flush=True)
        kept = srv or kept
    if serve:
        if kept is None:
            print("the patched server did not start; nothing to serve")
            return 1
        if security is not None and security.tls is not None:
            how = (f"remote-viewer --spice-ca-file={security.tls.ca_file} "
                   f"'spice://127.0.0.1?tls-port={kept.tls_port}' (it asks for the password)")
        else:
            how = f"remote-viewer spice://127.0.0.1:{kept.port}"
        print(f"patched server left running: {how}  (Ctrl-C to stop)", flush=True)
        try:
            while kept.alive():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            kept.close()
    return 0
