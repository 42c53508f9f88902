"""The race reproductions and the stateful machine on the sanitizer builds
(issue 5): {stock,patched}-asan (address + undefined) and
{stock,patched}-tsan, each built on its first use in a run (the
build_variant fixture: ./run build --variant NAME).  The sanitizer runtime is
LD_PRELOADed into the server process (before the race library); ASan and
TSan reports go to log_path files, UBSan's to the server's stderr (read
from the rig's output), counted per run (testing/sanitizer_reports.py).
A report counts if it involves spice-server's code or the shim's (QEMU's
side); whatever thread it names: QEMU's thread is the shim's core thread,
"created by main thread".  Shown apart, not failed on: TSan races whose
racing accesses have no frame in either (GLib/GStreamer among themselves);
the named FALSE_POSITIVES, matched on the accesses' frames; UBSan at the
UPSTREAM_UB locations, 0.16.0's own in files the series does not touch,
which the stock build reports at the same places (a test checks that).
The shim hands work between threads with pthread locks, which TSan sees
(GLib's futex locks it does not).  Zero counted reports on patched.

Positive controls, in the default run: the shim's test hook makes QEMU's
thread race with another (patched-tsan must report it, counted) and write
a freed block (patched-asan must report the use after free, counted), so
that "0 reports" means something.

Default run: a short selection on the patched variants only, so that it
builds two sanitizer variants, not four (the stock reproductions are in
tests/test_races.py, uninstrumented); ./run test --extended: every
reproduction on all four (stock must find its defect there too), the check
that stock reports the UPSTREAM_UB locations, and 0.16.0's destroy-time UB
on stock beside its fix (hardening 7) on patched.
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
from spice_initial_draw.errors import ServerCrashed
from spice_initial_draw.testing.sanitizer_reports import (
    UPSTREAM_UB,
    access_stacks,
    access_tops,
    classify,
    describe,
    false_positive,
    in_own_code,
    is_destroy_ub,
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
           # exitcode=0: TSan's own exit status (66 after any report) would
           # fail the run on a named false positive; the reports are judged
           # by sanitizer_reports, and a crash still fails it
           "TSAN_OPTIONS": f"log_path={base}:halt_on_error=0:report_signal_unsafe=0"
                           ":report_thread_leaks=0:second_deadlock_stack=1:exitcode=0"}
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
    own, outside, upstream, known = classify(reports(str(tmp_path), kwargs["output_sink"]))
    report(request, f"\n  {variant} [{name}]: "
                    f"{describe(own, outside, upstream, known)}, "
                    f"{len(defects)} defect(s)")
    for r in own[:5]:
        report(request, "    " + summary(r))
    if variant.startswith("stock"):
        # what tests/test_races.py shows uninstrumented: stock's defect
        assert defects, f"{variant}: reproduction {name} found no defect on stock"
        return
    assert not own, (f"{len(own)} sanitizer report(s) on {variant}:\n"
                     + "\n\n".join(own[:3]))
    assert not defects, "\n".join(defects)


@pytest.mark.parametrize("variant", ["patched-asan", "patched-tsan"])
def test_stateful_sanitized(request, tmp_path, variant, extended, build_variant):
    kwargs = sanitizer_setup(variant, str(tmp_path), build_variant)
    tally = run_machine(variant, max_examples=200 if extended else 5, rig_kwargs=kwargs)
    own, outside, upstream, known = classify(reports(str(tmp_path), kwargs["output_sink"]))
    report(request, f"\n  stateful {variant}: "
           f"{tally['examples']} examples, {tally['checks'] - tally['examples']} steps; "
           f"{describe(own, outside, upstream, known)}")
    assert not own, (f"{len(own)} sanitizer report(s) on {variant}:\n"
                     + "\n\n".join(own[:3]))


def sanitized_server(variant: str, logdir: str, build_variant) -> tuple[RaceRig, dict]:
    kwargs = sanitizer_setup(variant, logdir, build_variant)
    rig = RaceRig(variant, **kwargs)
    return rig, kwargs


def test_tsan_reports_a_race_on_qemus_thread(request, tmp_path, build_variant):
    """Positive control: QEMU's thread (the shim's core thread, which the
    Python main thread created) and another thread write one buffer,
    unordered; patched-tsan reports it, the parser finds it and counts it."""
    rig, kwargs = sanitized_server("patched-tsan", str(tmp_path), build_variant)
    with rig:
        rig.server.misuse_memory("race")
    own, outside, upstream, known = classify(reports(str(tmp_path), kwargs["output_sink"]))
    report(request, f"\n  patched-tsan control: {describe(own, outside, upstream, known)}")
    # one access by the shim's thread, the other by QEMU's (misuse_race_core,
    # a tail call, shows as its caller: sid_core_call's callback)
    def ran(frames, *names):
        return any(fn in names for fn, _ in frames)
    races = [r for r in own if "data race" in r
             and sorted(ran(f, "misuse_race_thread") for f in access_stacks(r)) == [False, True]
             and any(ran(f, "misuse_race_core", "sync_call_cb") for f in access_stacks(r))]
    assert len(races) == 1, ("TSan did not report the shim's deliberate race, or the "
                             f"parser did not count it:\n" + "\n\n".join(own or outside))
    report(request, "    " + summary(races[0]))
    # QEMU's thread, which a filter of "by main thread" made TSan blind to
    assert "'sid-core'" in races[0] and "created by main thread" in races[0]
    assert len(own) == 1, "\n\n".join(r for r in own if r is not races[0])


def test_asan_reports_a_use_after_free_on_qemus_thread(request, tmp_path, build_variant):
    """Positive control: QEMU's thread writes a freed block; patched-asan
    reports the heap-use-after-free (and ends the process), the parser finds
    it and counts it."""
    rig, kwargs = sanitized_server("patched-asan", str(tmp_path), build_variant)
    with rig:
        with pytest.raises(ServerCrashed):
            rig.server.misuse_memory("use-after-free")
    own, outside, upstream, known = classify(reports(str(tmp_path), kwargs["output_sink"]))
    report(request, f"\n  patched-asan control: {describe(own, outside, upstream, known)}")
    uaf = [r for r in own if "ERROR: AddressSanitizer: heap-use-after-free" in r
           and "misuse_use_after_free_core" in r]
    assert len(uaf) == 1, ("ASan did not report the shim's deliberate use after free, "
                           "or the parser did not count it:\n" + "\n\n".join(own or outside))
    report(request, "    " + summary(uaf[0]))


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


RACE_ON_QEMUS_THREAD = """WARNING: ThreadSanitizer: data race (pid=1)
  Read of size 8 at 0x724c00010110 by thread T1:
    #0 spice_qxl_gl_draw_async ../../subprojects/spice-0.16.0/server/red-qxl.cpp:530 (libspice-server.so.1+0x7ad87)
    #1 do_draw <null> (_shim.cpython-313-x86_64-linux-gnu.so+0xb1bf)
  Previous write of size 8 at 0x724c00010110 by thread T4 (mutexes: write M0):
    #0 red_qxl_gl_draw_async_complete ../../subprojects/spice-0.16.0/server/red-qxl.cpp:540 (libspice-server.so.1+0x7ae79)
    #1 display_channel_gl_draw_done(DisplayChannel*) ../../subprojects/spice-0.16.0/server/display-channel.cpp:2385 (libspice-server.so.1+0x3c4fe)
  Location is heap block of size 240 at 0x724c00010000 allocated by main thread:
    #0 operator new(unsigned long) ../../../../src/libsanitizer/tsan/tsan_new_delete.cpp:64 (libtsan.so.2.0.0+0x9da5c)
  Thread T1 'sid-core' (tid=5, running) created by main thread at:
    #0 pthread_create ../../../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:1022 (libtsan.so.2.0.0+0x568a6)
"""
RACE_OUTSIDE = """WARNING: ThreadSanitizer: data race (pid=1)
  Write of size 8 at 0x72080000a9c0 by thread T3:
    #0 free ../../../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:724 (libtsan.so.2.0.0+0x53f20)
    #1 g_queue_pop_tail <null> (libglib-2.0.so.0+0x72d66)
  Previous write of size 8 at 0x72080000a9c0 by thread T4 (mutexes: write M0):
    #0 malloc ../../../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:665 (libtsan.so.2.0.0+0x51656)
    #1 g_malloc <null> (libglib-2.0.so.0+0x65821)
"""


def test_tsan_attribution():
    """The classifier counts a race with an access in spice-server's code,
    also on QEMU's thread ("created by main thread"); sets apart one whose
    accesses have no frame in spice or the shim; and names the hand-over of
    a block spice allocated and GLib freed (the stacks are shortened real
    reports of this harness)."""
    assert in_own_code(RACE_IN_SPICE) and in_own_code(RACE_ON_QEMUS_THREAD)
    assert access_tops(RACE_ON_QEMUS_THREAD)[0].endswith("server/red-qxl.cpp:530")
    assert not in_own_code(RACE_OUTSIDE)
    assert in_own_code(RACE_IN_GLIB)
    assert access_tops(RACE_IN_GLIB) == ["<null>", "<null>"]
    assert split_tsan([RACE_IN_SPICE, RACE_OUTSIDE]) == ([RACE_IN_SPICE], [RACE_OUTSIDE])
    assert false_positive(RACE_IN_GLIB) == "block handed over through GLib/GStreamer"
    assert false_positive(RACE_IN_SPICE) is None
    assert false_positive(RACE_ON_QEMUS_THREAD) is None
    # spice's own free (g_free called by spice) of the block is not named
    own_free = RACE_IN_GLIB.replace("#1 g_queue_pop_tail <null> (libglib-2.0.so.0+0x72d66)",
                                    "#1 g_free <null> (libglib-2.0.so.0+0x72d66)")
    assert false_positive(own_free) is None
    assert classify([RACE_IN_SPICE, RACE_ON_QEMUS_THREAD, RACE_OUTSIDE, RACE_IN_GLIB]) == \
        ([RACE_IN_SPICE, RACE_ON_QEMUS_THREAD], [RACE_OUTSIDE], [], [RACE_IN_GLIB])


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


def test_destroy_ub_is_told_by_its_path():
    """0.16.0's destroy-time UB is told by its stack (a shortened real
    report of a stateful run on patched-asan before hardening 7); it is not
    excused: it counts."""
    found = ubsan_reports([DESTROY_UB_REPORT])
    assert len(found) == 1 and is_destroy_ub(found[0])
    assert not is_upstream_ub(found[0])
    assert classify(found)[0] == found
    elsewhere = "\n".join(ln for ln in DESTROY_UB_REPORT.splitlines()
                          if "spice_server_destroy" not in ln)
    assert not is_destroy_ub(ubsan_reports([elsewhere])[0])


DESTROY_RUNS = 60


@pytest.mark.extended   # up to a few minutes each
@pytest.mark.parametrize("variant", [
    pytest.param("stock-asan", marks=pytest.mark.xfail(
        strict=True, raises=AssertionError,
        reason="stock 0.16.0: spice_server_destroy() hands a queued client disconnect "
               "to the MainDispatcher it is destroying (UBSan)")),
    "patched-asan"])
def test_destroy_with_a_disconnect_queued(request, tmp_path, variant, build_variant):
    """spice_server_destroy() right after two clients went, as the rig stops
    (clients first, then the destroy): a client disconnect is still queued
    on the main dispatcher now and then (stock reported the UB in 4-14 of
    30-40 such runs here). No UBSan report on the destroy path in
    DESTROY_RUNS runs; stock reports it (hardening 7 fixes it)."""
    from spice_initial_draw import patterns
    image = patterns.quadrants(320, 240)
    for attempt in range(DESTROY_RUNS):
        kwargs = sanitizer_setup(variant, str(tmp_path / str(attempt)), build_variant)
        kwargs["env"]["SPICE_DEBUG_ALLOW_MC"] = "1"
        with RaceRig(variant, **kwargs) as rig:
            rig.scanout(image)
            rig.connect(0).wait_ready()
            rig.connect(1).wait_ready()
            rig.draw()
            time.sleep(0.05)
        found = [r for r in ubsan_reports(kwargs["output_sink"]) if is_destroy_ub(r)]
        assert not found, (f"{variant}, run {attempt + 1}: UB on the destroy path:\n"
                           + summary(found[0]))
    report(request, f"\n  {variant}: {DESTROY_RUNS} destroys, no UB on the destroy path")


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
