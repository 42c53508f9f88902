"""What the sanitizer builds report, read from a server's logs and output:
ASan/UBSan/TSan reports split into spice-server's own, those inside
uninstrumented GLib/GStreamer, and the UBSan locations 0.16.0 has before
the series (UPSTREAM_UB), for tests/test_sanitizers.py."""
from __future__ import annotations

import glob
import os
import re

OWN_CODE = re.compile(r"server/|spice-common/")
# A UBSan report: its line, then what follows it up to its stack's end:
# notes ("0x...: note: object is of type ..." and the memory dump under
# it, indented) and the stack ("    #N ..."). The notes say what an object
# really was; without them the stack would be cut off too.
UBSAN = re.compile(r"(?m)^\S+:\d+:\d+: runtime error: .*"
                   r"(?:\n(?:0x[0-9a-f]+: note: .*| .*))*")


def ubsan_reports(outputs: list[str]) -> list[str]:
    """UBSan reports (the line and its stack) in server outputs, once per
    location, when they involve spice-server's or spice-common's code."""
    seen: dict[str, str] = {}
    for text in outputs:
        for m in UBSAN.finditer(text):
            rep = m.group(0)
            where = rep.split(": runtime error", 1)[0]
            if OWN_CODE.search(rep) and where not in seen:
                seen[where] = rep
    return list(seen.values())


def reports(logdir: str, outputs: list[str] | None = None) -> list[str]:
    """Sanitizer reports in logdir that involve libspice-server, and the
    UBSan reports in the servers' outputs."""
    out = ubsan_reports(outputs or [])
    for path in sorted(glob.glob(os.path.join(logdir, "*"))):
        with open(path, errors="replace") as f:
            text = f.read()
        for chunk in re.split(r"(?m)^(?===+$)", text):
            if ("WARNING: ThreadSanitizer" in chunk or "ERROR: AddressSanitizer" in chunk) \
                    and "server/" in chunk \
                    and "by main thread" not in chunk:
                out.append(chunk.strip())
    return out


INTERCEPTOR = re.compile(r"tsan_interceptors|libtsan|sanitizer_common")
ACCESS = re.compile(r"(?m)^  (?=(?:Previous )?(?:[Ww]rite|[Rr]ead|Atomic)[^\n]* by )")


def access_tops(rep: str) -> list[str]:
    """For a TSan data race report: the location of each racing access's
    first frame outside the sanitizer runtime."""
    tops = []
    for section in ACCESS.split(rep)[1:]:
        stack = re.split(r"(?m)^  (?:Mutex|Thread|Location) ", section)[0]
        frames = re.findall(r"(?m)^\s+#\d+ (\S+) (\S+)", stack)
        tops.append(next((loc for _, loc in frames
                          if not INTERCEPTOR.search(loc)), "<none>"))
    return tops


def in_own_code(rep: str) -> bool:
    """Whether a report is about spice-server's own code (see the module
    docstring); any non-TSan report is."""
    if "WARNING: ThreadSanitizer: data race" not in rep:
        return True
    return any(OWN_CODE.search(top) for top in access_tops(rep))


def split_tsan(found: list[str]) -> tuple[list[str], list[str]]:
    own = [r for r in found if in_own_code(r)]
    return own, [r for r in found if not in_own_code(r)]


# Undefined behaviour that spice-server 0.16.0 has before the series: in
# files the series does not touch, reported by the stock build at the same
# places in every reproduction (test_upstream_ub_also_on_stock checks that
# each one is, so this list cannot hide what the series brings).
UPSTREAM_UB = {
    "server/reds.cpp:2234": "reds_handle_read_link_done(): the link message's "
                            "capabilities byte-swapped in place through a "
                            "uint32_t * at an odd offset (misaligned load/store)",
    "server/red-channel.h:48": "test_capability(): reads the same misaligned "
                               "capabilities",
    "common/lz_compress_tmpl.c:397": "spice-common LZ: the DJB2 hash in int "
                                     "(left shift/overflow of a signed int)",
    "common/lz_compress_tmpl.c:406": "spice-common LZ: the same hash",
}


def ub_location(rep: str) -> str | None:
    """path:line of a UBSan report (None for other reports)."""
    m = re.match(r"(\S+):(\d+):\d+: runtime error", rep)
    return f"{m.group(1)}:{m.group(2)}" if m else None


# 0.16.0's spice_server_destroy() drops the main dispatcher with
# shared_ptr::reset(), which unrefs before it clears the pointer; the
# dispatcher's destructor handles the messages still queued, and a client
# disconnect among them frees the client's main channel stream, whose
# channel event goes to reds->main_dispatcher: the object being destroyed
# (UBSan's vptr check: "object is of type 'Dispatcher'"). It takes a client
# that disconnected just before the destroy. Counted apart only with that
# path in its stack: the same lines reached otherwise count. QEMU never
# calls spice_server_destroy() (Debian's ui-spice-core.so does not import
# it); the shim does, to stop.
UPSTREAM_DESTROY_UB = {
    "server/red-stream.cpp:452": "red_stream_push_channel_event() on the main "
                                 "dispatcher being destroyed (spice_server_destroy)",
    "server/main-dispatcher.cpp:88": "MainDispatcher::channel_event() on the same",
}
DESTROY_PATH = ("spice_server_destroy", "DispatcherPrivate::~DispatcherPrivate")


def listed_at(rep: str, table: dict[str, str]) -> str | None:
    """The key of `table` (server/file:line) where UBSan report `rep` is."""
    where = ub_location(rep)
    return next((k for k in table if where and where.endswith("/" + k)), None)


def is_upstream_ub(rep: str) -> bool:
    if listed_at(rep, UPSTREAM_UB):
        return True
    return (listed_at(rep, UPSTREAM_DESTROY_UB) is not None
            and all(frame in rep for frame in DESTROY_PATH))


def classify(found: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(counted, TSan inside GLib/GStreamer, upstream UB): reports that count
    against a variant, and the two kinds shown apart."""
    upstream = [r for r in found if is_upstream_ub(r)]
    own, uninstrumented = split_tsan([r for r in found if not is_upstream_ub(r)])
    return own, uninstrumented, upstream


def describe(own: list[str], uninstrumented: list[str],
             upstream: list[str]) -> str:
    return (f"{len(own)} report(s) in spice-server's code, "
            f"{len(uninstrumented)} inside GLib/GStreamer (uninstrumented), "
            f"{len(upstream)} upstream UB location(s) (UPSTREAM_UB)")


def summary(rep: str) -> str:
    lines = [ln for ln in rep.splitlines() if ln.strip()]
    head = next((ln for ln in lines if "Sanitizer" in ln or "runtime error" in ln), lines[0])
    frames = [ln.strip() for ln in lines if re.match(r"\s+#\d+ ", ln) and "server/" in ln][:3]
    return head.strip() + "\n      " + "\n      ".join(frames)
