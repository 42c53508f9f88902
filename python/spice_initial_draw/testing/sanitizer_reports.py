"""What the sanitizer builds report, read from a server's logs and output:
ASan/UBSan/TSan reports split into those that count (they involve
spice-server's code or the shim's, QEMU's side), those provably outside
both (every racing access, or every frame, in GLib/GStreamer/libc or the
runtime), the false positives named in FALSE_POSITIVES (matched on the
racing accesses' frames) and the UBSan locations 0.16.0 has before the
series (UPSTREAM_UB), for tests/test_sanitizers.py.  Nothing is told apart
by thread names: QEMU's thread is the one the Python main thread created."""
from __future__ import annotations

import glob
import os
import re

SPICE_CODE = re.compile(r"server/|spice-common/")
# The code a report is ours for: spice-server and spice-common (built with
# the sanitizer, with sources) and the shim (not instrumented: it shows in
# stacks under the runtime's interceptors, by its module's name).
OWN_CODE = re.compile(r"server/|spice-common/|libspice-server\.so|_shim\.cpython|/csrc/")
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
            if SPICE_CODE.search(rep) and where not in seen:
                seen[where] = rep
    return list(seen.values())


def reports(logdir: str, outputs: list[str] | None = None) -> list[str]:
    """Every ASan and TSan report in logdir's files, and the UBSan reports
    of spice's code in the servers' outputs; classify() sorts them."""
    out = ubsan_reports(outputs or [])
    for path in sorted(glob.glob(os.path.join(logdir, "*"))):
        with open(path, errors="replace") as f:
            text = f.read()
        for chunk in re.split(r"(?m)^(?===+$)", text):
            if "WARNING: ThreadSanitizer" in chunk or "ERROR: AddressSanitizer" in chunk:
                out.append(chunk.strip())
    return out


INTERCEPTOR = re.compile(r"tsan_interceptors|libtsan|sanitizer_common")
ACCESS = re.compile(r"(?m)^  (?=(?:Previous )?(?:[Ww]rite|[Rr]ead|Atomic)[^\n]* by )")
FRAME = re.compile(r"(?m)^\s+#\d+ (?:0x[0-9a-f]+ in )?(\S+) (.*)$")


def access_frames(rep: str) -> list[list[tuple[str, str]]]:
    """For a TSan data race report: the stack of each racing access, as
    (function, location) frames, the runtime's interceptor first."""
    stacks = []
    for section in ACCESS.split(rep)[1:]:
        stack = re.split(r"(?m)^  (?:Mutex|Thread|Location) |^SUMMARY", section)[0]
        stacks.append(FRAME.findall(stack))
    return stacks


def access_stacks(rep: str) -> list[list[tuple[str, str]]]:
    """The same, the runtime's own frames left out."""
    stacks = []
    for frames in access_frames(rep):
        while frames and INTERCEPTOR.search(frames[0][1]):
            frames = frames[1:]
        stacks.append(frames)
    return stacks


def access_tops(rep: str) -> list[str]:
    """For a TSan data race report: the location of each racing access's
    first frame outside the sanitizer runtime."""
    return [frames[0][1].split(" ", 1)[0] if frames else "<none>"
            for frames in access_stacks(rep)]


def outside_own_code(rep: str) -> bool:
    """Whether a report is provably about code that is neither spice's nor
    the shim's: for a data race, every racing access's stack (which TSan
    restored) has no frame in them; for any other report, no frame at all."""
    if "WARNING: ThreadSanitizer: data race" in rep:
        stacks = access_stacks(rep)
        return bool(stacks) and all(
            frames and not any(OWN_CODE.search(f"{fn} {loc}") for fn, loc in frames)
            for frames in stacks)
    return not any(OWN_CODE.search(f"{fn} {loc}") for fn, loc in FRAME.findall(rep))


def in_own_code(rep: str) -> bool:
    return not outside_own_code(rep)


def split_tsan(found: list[str]) -> tuple[list[str], list[str]]:
    own = [r for r in found if in_own_code(r)]
    return own, [r for r in found if not in_own_code(r)]


ALLOCATORS = {"malloc", "calloc", "realloc"}


def _handed_over_block(rep: str) -> bool:
    """A block allocated on one thread and freed on another by GLib's or
    GStreamer's own code (see FALSE_POSITIVES)."""
    kinds = []
    for raw, frames in zip(access_frames(rep), access_stacks(rep)):
        runtime = raw[0][0] if raw and INTERCEPTOR.search(raw[0][1]) else ""
        if runtime in ALLOCATORS:
            kinds.append("allocation")
        elif runtime == "free" and frames and frames[0][0] != "g_free" \
                and not OWN_CODE.search(f"{frames[0][0]} {frames[0][1]}"):
            kinds.append("freed by a library")
        else:
            kinds.append("other")
    return sorted(kinds) == ["allocation", "freed by a library"]


def _release_data_of_a_weak_ref(rep: str) -> bool:
    """The encoder's release data read in its GstMemory weak-ref callback
    against its allocation (see FALSE_POSITIVES)."""
    kinds = []
    for raw, frames in zip(access_frames(rep), access_stacks(rep)):
        runtime = raw[0][0] if raw and INTERCEPTOR.search(raw[0][1]) else ""
        if runtime in ALLOCATORS:
            kinds.append("allocation")
        elif frames and frames[0][0] == "spice_gst_mem_release_cb":
            kinds.append("weak-ref callback")
        else:
            kinds.append("other")
    return sorted(kinds) == ["allocation", "weak-ref callback"]


# Reports TSan makes that are not races, each matched on the frames of its
# racing accesses, with why it is not one.  Matched reports are shown
# apart, by name, and do not count.
FALSE_POSITIVES: dict[str, tuple[object, str]] = {
    "block handed over through GLib/GStreamer": (
        _handed_over_block,
        "TSan counts a block's allocation and its free as writes. The two "
        "accesses are exactly those: the allocation (often spice's: "
        "g_malloc, g_strdup_printf of a pipeline or caps string, a buffer "
        "it wraps) and the free by GLib's or GStreamer's own code (not "
        "g_free called by spice) on one of their threads, after the block "
        "went there through their queues and futex-based locks, which TSan "
        "does not see. A use of the block by spice after the hand-over "
        "would be reported with spice's frame as that access, not its "
        "allocation; a free while it is in use is ASan's."),
    "release data handed over with the GstMemory": (
        _release_data_of_a_weak_ref,
        "core 5: encode_dmabuf() allocates and fills the release data, then "
        "registers it with gst_mini_object_weak_ref() on the DMA-BUF's "
        "GstMemory and pushes the buffer; the callback reads it in whichever "
        "GStreamer thread drops the memory. GStreamer orders the two through "
        "the weak-ref list's lock and appsrc's queue (GLib bit locks and "
        "futex-based mutexes), which TSan does not see. Matched only against "
        "the block's allocation: any other access of the callback counts."),
}


def false_positive(rep: str) -> str | None:
    """The FALSE_POSITIVES entry a TSan data race report is, or None."""
    if "WARNING: ThreadSanitizer: data race" not in rep:
        return None
    return next((name for name, (match, _) in FALSE_POSITIVES.items()
                 if match(rep)), None)


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


def listed_at(rep: str, table: dict[str, str]) -> str | None:
    """The key of `table` (server/file:line) where UBSan report `rep` is."""
    where = ub_location(rep)
    return next((k for k in table if where and where.endswith("/" + k)), None)


def is_upstream_ub(rep: str) -> bool:
    return listed_at(rep, UPSTREAM_UB) is not None


# 0.16.0's spice_server_destroy() let the main dispatcher's destructor
# handle a client disconnect still queued, whose channel event went to the
# MainDispatcher being destroyed (UBSan's vptr check: "object is of type
# 'Dispatcher'"); hardening 7 fixes it. Its stack, for
# test_destroy_with_a_disconnect_queued.
DESTROY_UB_PATH = ("spice_server_destroy", "DispatcherPrivate::~DispatcherPrivate")


def is_destroy_ub(rep: str) -> bool:
    """A UBSan report on 0.16.0's destroy path (see DESTROY_UB_PATH)."""
    return ub_location(rep) is not None and all(f in rep for f in DESTROY_UB_PATH)


def classify(found: list[str]) -> tuple[list[str], list[str], list[str], list[str]]:
    """(counted, outside spice and the shim, upstream UB, named false
    positives): the reports that count against a variant, and the three
    kinds shown apart."""
    upstream = [r for r in found if is_upstream_ub(r)]
    rest, outside = split_tsan([r for r in found if not is_upstream_ub(r)])
    known = [r for r in rest if false_positive(r)]
    return [r for r in rest if not false_positive(r)], outside, upstream, known


def describe(own: list[str], outside: list[str], upstream: list[str],
             known: list[str]) -> str:
    return (f"{len(own)} report(s) in spice-server's or the shim's code, "
            f"{len(outside)} outside them (GLib/GStreamer/libc), "
            f"{len(known)} named false positive(s) "
            f"({', '.join(sorted({false_positive(r) or '' for r in known})) or 'none'}), "
            f"{len(upstream)} upstream UB location(s) (UPSTREAM_UB)")


ACCESS_LINE = re.compile(r"(?m)^  ((?:Previous )?(?:[Ww]rite|[Rr]ead|Atomic)[^\n]* by "
                         r"(?:main thread|thread T\d+))")


def summary(rep: str) -> str:
    """The report's line and, for a data race, each access's thread and top
    three frames; for another report, its first three frames in own code."""
    lines = [ln for ln in rep.splitlines() if ln.strip()]
    head = next((ln for ln in lines if "Sanitizer" in ln or "runtime error" in ln), lines[0])
    if "WARNING: ThreadSanitizer: data race" in rep:
        parts = [f"{who}: " + " <- ".join(f"{fn} ({loc.rsplit('/', 1)[-1]})"
                                          for fn, loc in frames[:3])
                 for who, frames in zip(ACCESS_LINE.findall(rep), access_stacks(rep))]
    else:
        parts = [ln.strip() for ln in lines if re.match(r"\s+#\d+ ", ln)
                 and OWN_CODE.search(ln)][:3]
    return head.strip() + "\n      " + "\n      ".join(parts)
