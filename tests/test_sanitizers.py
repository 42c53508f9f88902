"""The race reproductions and the stateful machine on the sanitizer builds
(issue 5): {stock,patched}-asan (address + undefined) and
{stock,patched}-tsan, each built on its first use in a run (the
build_variant fixture: ./run build --variant NAME).  The sanitizer runtime is
LD_PRELOADed into the server process (before the race library); ASan and
TSan reports go to log_path files, UBSan's to the server's stderr (read
from the rig's output), counted per run.  ASan/UBSan reports count if any
frame is in spice-server's sources, except UBSan at the UPSTREAM_UB
locations: 0.16.0's own undefined behaviour in files the series does not
touch, which the stock build reports at the same places (a test checks
that); those are counted apart and shown, as is UPSTREAM_DESTROY_UB, on
spice_server_destroy()'s path only.  A TSan report counts if one of the two racing
accesses happens in spice-server's own code (its first frame after the
sanitizer's interceptors is in server/ or spice-common): a race between two
accesses inside GLib or GStreamer (memory handed over through their
futex-based, uninstrumented locks: thread pools, buffer pools) is counted
apart as "uninstrumented" and shown, not failed on.  Zero counted reports
on patched; what stock gives is printed as evidence.

Default run: a short selection on the patched variants only, so that it
builds two sanitizer variants, not four (the stock reproductions are in
tests/test_races.py, uninstrumented); ./run test --extended: every
reproduction on all four, and the checks that stock reports the
UPSTREAM_UB and UPSTREAM_DESTROY_UB locations too.
"""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

import pytest

from spice_initial_draw import variants
from spice_initial_draw.testing.assertions import report
from spice_initial_draw.testing.racerig import RaceRig
from spice_initial_draw.testing.repros import REPROS, run_repro
from spice_initial_draw.testing.sanitizer_reports import (
    UPSTREAM_DESTROY_UB,
    UPSTREAM_UB,
    access_tops,
    classify,
    describe,
    in_own_code,
    is_upstream_ub,
    listed_at,
    reports,
    split_tsan,
    summary,
    ub_location,
    ubsan_reports,
)
from spice_initial_draw.testing.stateful import run_machine


def runtime(kind: str) -> str | None:
    name = {"asan": "libasan.so", "tsan": "libtsan.so"}[kind]
    try:
        p = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True,
                           text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return os.path.realpath(p) if p and os.path.isabs(p) and os.path.exists(p) else None


def sanitizer_setup(variant: str, logdir: str,
                    build_variant: Callable[[str], None]) -> dict:
    """RaceRig kwargs to run `variant` (e.g. "patched-tsan"), which
    build_variant (the fixture) builds first if it is not.  A variant that
    cannot be had fails the test, it is not skipped."""
    kind = variant.rsplit("-", 1)[1]
    if variant not in variants.available_variants():
        pytest.fail(f"variant {variant!r} is not one the installed package "
                    f"knows ({', '.join(variants.available_variants())})",
                    pytrace=False)
    build_variant(variant)
    try:
        variants.variant_library(variant)
    except Exception as e:
        pytest.fail(f"variant {variant!r}: {e}", pytrace=False)
    rt = runtime(kind)
    if rt is None:
        pytest.fail(f"no {kind} runtime (gcc -print-file-name), although "
                    f"{variant} was built with it", pytrace=False)
    base = os.path.join(logdir, kind)
    env = {"ASAN_OPTIONS": f"detect_leaks=0:log_path={base}:halt_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1",
           "TSAN_OPTIONS": f"log_path={base}:halt_on_error=0:report_signal_unsafe=0"
                           ":report_thread_leaks=0:second_deadlock_stack=1"}
    # UBSan reports go to the server's stderr (GCC's libasan carries the
    # UBSan runtime, which does not take log_path): the rig hands it over
    return {"preload_first": [rt], "env": env, "output_sink": []}


DEFAULT_CASES = [("patched-asan", "ii-scanout-during-draw-encode"),
                 ("patched-tsan", "ii-scanout-during-draw-encode"),
                 ("patched-tsan", "v-draw-during-initial-frame")]
# every reproduction on every sanitizer variant; the others with --extended
CASES = [pytest.param(v, r, id=f"{v}-{r}",
                      marks=() if (v, r) in DEFAULT_CASES else pytest.mark.extended)
         for v in (f"{b}-{k}" for b in ("stock", "patched") for k in ("asan", "tsan"))
         for r in REPROS]


@pytest.mark.parametrize("variant,name", CASES)
def test_repro_sanitized(request, tmp_path, variant, name, build_variant):
    kwargs = sanitizer_setup(variant, str(tmp_path), build_variant)
    kwargs["env"]["SPICE_DEBUG_ALLOW_MC"] = "1"
    defects, took = run_repro(name, variant, park_timeout=20.0, **kwargs)
    own, uninstrumented, upstream = classify(reports(str(tmp_path), kwargs["output_sink"]))
    report(request, f"\n  {variant} [{name}]: "
                    f"{describe(own, uninstrumented, upstream)}, "
                    f"{len(defects)} defect(s)")
    for r in own[:3]:
        report(request, "    " + summary(r))
    if variant.startswith("stock"):
        return
    assert not own, (f"{len(own)} sanitizer report(s) on {variant}:\n"
                     + "\n\n".join(own[:3]))
    assert not defects, "\n".join(defects)


@pytest.mark.parametrize("variant", ["patched-asan", "patched-tsan"])
def test_stateful_sanitized(request, tmp_path, variant, extended, build_variant):
    kwargs = sanitizer_setup(variant, str(tmp_path), build_variant)
    tally = run_machine(variant, max_examples=200 if extended else 5, rig_kwargs=kwargs)
    own, uninstrumented, upstream = classify(reports(str(tmp_path), kwargs["output_sink"]))
    report(request, f"\n  stateful {variant}: "
           f"{tally['examples']} examples, {tally['checks'] - tally['examples']} steps; "
           f"{describe(own, uninstrumented, upstream)}")
    assert not own, (f"{len(own)} sanitizer report(s) on {variant}:\n"
                     + "\n\n".join(own[:3]))


RACE_IN_SPICE = """WARNING: ThreadSanitizer: data race (pid=1)
  Write of size 4 at 0x7b0400000010 by thread T2:
    #0 update_next_frame_mm_time ../../subprojects/spice-0.16.0/server/gstreamer-encoder.c:570 (libspice-server.so.1+0xa0f00)
    #1 spice_gst_encoder_encode_dmabuf ../../subprojects/spice-0.16.0/server/gstreamer-encoder.c:1844 (libspice-server.so.1+0xa1cfb)
  Previous read of size 4 at 0x7b0400000010 by thread T3:
    #0 pull_compressed_buffer ../../subprojects/spice-0.16.0/server/gstreamer-encoder.c:1400 (libspice-server.so.1+0xa0a00)
    #1 <null> <null> (libgstapp-1.0.so.0+0x1234)
  Thread T3 'src:src' (tid=3, running) created by thread T2 at:
    #0 pthread_create ../../../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:1022 (libtsan.so.2.0.0+0x568a6)
"""
RACE_IN_GLIB = """WARNING: ThreadSanitizer: data race (pid=1)
  Write of size 8 at 0x72080006e440 by thread T3:
    #0 free ../../../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:724 (libtsan.so.2.0.0+0x53f20)
    #1 g_queue_pop_tail <null> (libglib-2.0.so.0+0x72d66)
  Previous write of size 8 at 0x72080006e440 by thread T2 (mutexes: write M0):
    #0 malloc ../../../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:665 (libtsan.so.2.0.0+0x51656)
    #1 g_malloc <null> (libglib-2.0.so.0+0x65821)
    #2 spice_gst_encoder_encode_dmabuf ../../subprojects/spice-0.16.0/server/gstreamer-encoder.c:1844 (libspice-server.so.1+0xa1cfb)
  Mutex M0 (0x720c000205b0) created at:
    #0 pthread_mutex_init ../../../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:1315 (libtsan.so.2.0.0+0x5545f)
    #1 gstreamer_encoder_new ../../subprojects/spice-0.16.0/server/gstreamer-encoder.c:2157 (libspice-server.so.1+0xa31b3)
"""


def test_tsan_attribution():
    """The classifier counts a race whose accesses are in spice-server's
    code, and sets apart one between two accesses inside GLib (the stacks
    are shortened real reports of this harness)."""
    assert in_own_code(RACE_IN_SPICE)
    assert not in_own_code(RACE_IN_GLIB)
    assert access_tops(RACE_IN_GLIB) == ["<null>", "<null>"]
    assert split_tsan([RACE_IN_SPICE, RACE_IN_GLIB]) == ([RACE_IN_SPICE], [RACE_IN_GLIB])


UBSAN_OUTPUT = """(python:11222): Spice-WARNING **: 15:06:09.234: display:0: Connection reset by peer
../../subprojects/spice-0.16.0/subprojects/spice-common/common/lz_compress_tmpl.c:406:13: runtime error: left shift of 2086473605 by 5 places cannot be represented in type 'int'
    #0 0x7f0027a5c9f9 in lz_rgb32_compress_seg ../../subprojects/spice-0.16.0/subprojects/spice-common/common/lz_compress_tmpl.c:406
    #1 0x7f0027a5eb53 in lz_rgb32_compress ../../subprojects/spice-0.16.0/subprojects/spice-common/common/lz_compress_tmpl.c:497

../../subprojects/spice-0.16.0/subprojects/spice-common/common/lz_compress_tmpl.c:406:13: runtime error: left shift of 134152229 by 5 places cannot be represented in type 'int'
    #0 0x7f0027a5c9f9 in lz_rgb32_compress_seg ../../subprojects/spice-0.16.0/subprojects/spice-common/common/lz_compress_tmpl.c:406
/usr/include/glib-2.0/glib/gmacros.h:1:1: runtime error: load of misaligned address
    #0 0x7f0026d03484 in g_something (/lib/x86_64-linux-gnu/libglib-2.0.so.0+0x5c484)
"""


# A report with notes between its line and its stack (real, of this harness).
UBSAN_NOTED_OUTPUT = """../../subprojects/spice-0.16.0/server/reds.cpp:2234:19: runtime error: load of misaligned address 0x503000013a92 for type 'uint32_t', which requires 4 byte alignment
0x503000013a92: note: pointer points here
 12 00  00 00 0d 00 00 00 0f 00  00 00 00 00 00 00 00 00  02 11 00 00 18 00 00 00  02 00 00 00 01 00
              ^
    #0 0x7fefb58d5635 in reds_handle_read_link_done ../../subprojects/spice-0.16.0/server/reds.cpp:2234
    #1 0x7fefb3c3c9e3 in watch_cb (_shim.cpython-313-x86_64-linux-gnu.so+0x69e3)
(python:11222): Spice-WARNING **: 15:06:09.234: display:0: Connection reset by peer
"""


def test_ubsan_reports():
    """UBSan reports are read from the server's output, once per location,
    when spice's code is involved (a shortened real report of this harness)."""
    found = ubsan_reports([UBSAN_OUTPUT])
    assert len(found) == 1
    assert "lz_compress_tmpl.c:406:13: runtime error: left shift" in found[0]
    assert "#1 " in found[0]
    noted = ubsan_reports([UBSAN_NOTED_OUTPUT])
    assert len(noted) == 1
    assert "note: pointer points here" in noted[0]
    assert "#1 0x7fefb3c3c9e3 in watch_cb" in noted[0]
    assert "Spice-WARNING" not in noted[0]
    assert is_upstream_ub(found[0])
    assert not is_upstream_ub(RACE_IN_SPICE)


DESTROY_UB_REPORT = """../../subprojects/spice-0.16.0/server/red-stream.cpp:452:22: runtime error: member call on address 0x504000006110 which does not point to an object of type 'MainDispatcher'
0x504000006110: note: object is of type 'Dispatcher'
 01 00 00 00  b8 d4 4a ac 48 7f 00 00  00 00 00 00 00 00 00 00  20 41 00 00 80 50 00 00  40 ff 00 00
              ^~~~~~~~~~~~~~~~~~~~~~~
              vptr for 'Dispatcher'
    #0 0x7f48abf22556 in red_stream_push_channel_event ../../subprojects/spice-0.16.0/server/red-stream.cpp:452
    #1 0x7f48abf22600 in red_stream_free ../../subprojects/spice-0.16.0/server/red-stream.cpp:424
    #13 0x7f48abe1e359 in main_dispatcher_handle_client_disconnect ../../subprojects/spice-0.16.0/server/main-dispatcher.cpp:116
    #14 0x7f48abd5cf8a in DispatcherPrivate::handle_single_read() ../../subprojects/spice-0.16.0/server/dispatcher.cpp:222
    #15 0x7f48abd5d64a in DispatcherPrivate::~DispatcherPrivate() ../../subprojects/spice-0.16.0/server/dispatcher.cpp:71
    #22 0x7f48abf091aa in spice_server_destroy ../../subprojects/spice-0.16.0/server/reds.cpp:3780
"""


def test_upstream_destroy_ub_needs_its_path():
    """The destroy-time UB is set apart only on spice_server_destroy's path
    (a shortened real report of a stateful run on patched-asan)."""
    found = ubsan_reports([DESTROY_UB_REPORT])
    assert len(found) == 1 and is_upstream_ub(found[0])
    elsewhere = "\n".join(ln for ln in DESTROY_UB_REPORT.splitlines()
                          if "spice_server_destroy" not in ln)
    assert not is_upstream_ub(ubsan_reports([elsewhere])[0])


@pytest.mark.extended   # up to a few minutes
def test_upstream_destroy_ub_also_on_stock(tmp_path, build_variant):
    """Stock reports UPSTREAM_DESTROY_UB on the same path: two clients, a
    draw, then the rig stops (clients first, then spice_server_destroy).
    It takes a client disconnect still queued at the destroy, which came in
    4-14 of 30-40 such runs here; up to 60 runs."""
    from spice_initial_draw import patterns
    image = patterns.quadrants(320, 240)
    seen: set[str] = set()
    for attempt in range(60):
        kwargs = sanitizer_setup("stock-asan", str(tmp_path / str(attempt)),
                                 build_variant)
        kwargs["env"]["SPICE_DEBUG_ALLOW_MC"] = "1"
        with RaceRig("stock-asan", **kwargs) as rig:
            rig.scanout(image)
            rig.connect(0).wait_ready()
            rig.connect(1).wait_ready()
            rig.draw()
            time.sleep(0.05)
        seen |= {listed_at(r, UPSTREAM_DESTROY_UB)
                 for r in ubsan_reports(kwargs["output_sink"])
                 if is_upstream_ub(r) and listed_at(r, UPSTREAM_DESTROY_UB)}
        if len(seen) == len(UPSTREAM_DESTROY_UB):
            return
    pytest.fail(f"stock-asan reported {sorted(seen)} of UPSTREAM_DESTROY_UB "
                f"{sorted(UPSTREAM_DESTROY_UB)} in 60 runs")


@pytest.mark.extended   # builds stock-asan, which nothing else in a default run uses
def test_upstream_ub_also_on_stock(tmp_path, build_variant):
    """Every UPSTREAM_UB location is reported by the stock build too (in one
    reproduction: they are on the connect and first-frame paths)."""
    kwargs = sanitizer_setup("stock-asan", str(tmp_path), build_variant)
    kwargs["env"]["SPICE_DEBUG_ALLOW_MC"] = "1"
    run_repro("ii-scanout-during-draw-encode", "stock-asan", park_timeout=20.0, **kwargs)
    found = reports(str(tmp_path), kwargs["output_sink"])
    missing = set(UPSTREAM_UB) - {listed_at(r, UPSTREAM_UB) for r in found}
    seen = sorted(w for w in map(ub_location, found) if w)
    assert not missing, (f"UPSTREAM_UB lists {sorted(missing)}, which stock does "
                         f"not report (stock reports {seen})")
