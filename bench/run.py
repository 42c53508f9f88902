"""`./run bench [--quick] [...]`: the benchmarks of spice-initial-draw (not
tests).  Writes results.json, results.md and PNG plots to --output.  A run
of some steps (--only) replaces their rows there and keeps the others'.

Steps (each prints a progress line):
 1. time to first frame (TTFF) of a client connecting to an idle VM, per
    resolution x codec x content, patched (several runs) beside stock (one
    run: "no frame in N s"); in the same run the display channel's ready
    time, and the reference: an ordinary QEMU draw -> pixels on the same
    client program (fresh server, client connected first, then scanout +
    draw: BASELINE's method), plus a warm draw on the TTFF client;
 2. the encode floor: a fresh GStreamer pipeline built as spice builds it,
    one frame, per codec x resolution x content;
 3. steady state: 300 QEMU draws with one client: draw -> async_complete
    latency and server CPU per draw (/proc utime+stime), plus instructions
    per draw under callgrind;
 4. connect storm: 1, 4, 16 clients at once on an idle VM: TTFF per client;
    and a QEMU draw issued during the storm: its completion latency;
 5. the race reproductions of tests/test_races.py: wall time of each, per
    variant, beside issue 5's target (under 5 s); the tests assert what they
    find, not how long they take;
 6. live frames (bench/live.py, issue 26): numbered guest draws to a client
    already showing the picture, per scenario (loopback, wan, a client
    stall, 60/s through 2 Mbit/s) x codec x variant: frames shown,
    draw -> pixels, the guest's draws/s, draw -> async_complete, the last
    draw shown; the targets against stock in the same run.

Each step plans its units of work, one progress line each; their sum is the
progress total.  --plan lists them and measures nothing.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import live
import measure
import report
from spice_initial_draw.codecs import VIDEO_CODECS
from spice_initial_draw.security import Security, make_test_ca

CODECS = VIDEO_CODECS
NET_PROFILES = ("lan", "metro", "wan", "poor")
IDLE_CASES = ("draw", "connect")
RESOLUTIONS = ((1280, 720), (1920, 1080), (3840, 2160))
VARIANTS = ("stock", "patched")
START_RETRIES = 3  # a server that cannot start while another ./run rebuilds the package
START_RETRY_WAIT_S = 20

Row = dict[str, Any]  # one measurement, as results.json holds it


def profile(quick: bool) -> dict[str, Any]:
    if quick:
        return {"resolutions": [(1920, 1080)], "codecs": list(CODECS),
                "contents": ["pattern", "noise"], "runs": {"pattern": 2, "noise": 1},
                "stock_runs": 1, "stock_window": 2.0, "window": 15.0,
                "floor_reps": 2, "steady_draws": 60, "steady_period": 0.03,
                "callgrind_draws": 10, "callgrind_period": 0.25, "steady_codecs": ["mjpeg"],
                "storm_sizes": [1, 4], "storm_window": 10.0, "stock_storm_window": 2.0,
                "repro_runs": 1, "idle_window": 5.0, "repeat_runs": 5, "stock_repeat_runs": 1,
                "tls_runs": 2, "net_steady_draws": 90, "live_quick": True}
    return {"resolutions": list(RESOLUTIONS), "codecs": list(CODECS),
            "contents": ["pattern", "noise"], "runs": {"pattern": 5, "noise": 3},
            "stock_runs": 2, "stock_window": 5.0, "window": 10.0,
            "floor_reps": 5, "steady_draws": 300, "steady_period": 0.03,
            "callgrind_draws": 40, "callgrind_period": 0.25, "steady_codecs": ["mjpeg", "h264"],
            "storm_sizes": [1, 4, 16], "storm_window": 20.0, "stock_storm_window": 5.0,
            "repro_runs": 3, "idle_window": 10.0, "repeat_runs": 20, "stock_repeat_runs": 3,
            "tls_runs": 5, "net_steady_draws": 300, "live_quick": False}


class Progress:
    def __init__(self, total: int) -> None:
        self.total, self.n, self.t0 = total, 0, time.monotonic()

    def step(self, what: str, result: str) -> None:
        self.n += 1
        el = time.monotonic() - self.t0
        print(f"[{self.n:3d}/{self.total} {int(el) // 60:2d}:{int(el) % 60:02d}] "
              f"{what}: {result}", flush=True)


def fmt_ms(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, list):
        return "/".join(fmt_ms(x) for x in v)
    return f"{v:.0f} ms"


# -- running ------------------------------------------------------------------


@dataclass
class Bench:
    """What the units of work share while they run."""
    output: str
    results: dict[str, Any]
    progress: Progress

    def run(self, unit: Unit) -> None:
        """Runs one unit: its progress line (unless an error already took
        its place), then results.json as it stands."""
        result = unit.run(self)
        if result is not None:
            self.progress.step(unit.what, result)
        _save(self.output, self.results)

    def measure(self, what: str, call: Callable[[], Row], *,
                error_is_step: bool = True) -> Row | None:
        """call()'s row, or None after an error, which is recorded in results
        and printed: as the unit's progress line, or, when the unit prints its
        own line after several measurements (error_is_step=False), as a line
        without a number."""
        for attempt in range(START_RETRIES + 1):
            try:
                return call()
            except Exception as e:  # noqa: BLE001 (recorded; the next unit runs)
                # another ./run rebuilding the package under us: the worker
                # cannot even import the shim; wait and retry
                if "during info()" in str(e) and attempt < START_RETRIES:
                    print(f"    {what}: server failed to start, retrying in "
                          f"{START_RETRY_WAIT_S} s (concurrent rebuild?)", flush=True)
                    time.sleep(START_RETRY_WAIT_S)
                    continue
                self._error(what, e, error_is_step)
                return None
        return None

    def _error(self, what: str, e: Exception, is_step: bool) -> None:
        self.results["errors"].append(f"{what}: {type(e).__name__}: {e}")
        first_line = (str(e).splitlines() or [""])[0]
        result = f"ERROR {type(e).__name__}: {first_line[:200]}"
        if is_step:
            self.progress.step(what, result)
        else:
            print(f"    {what}: {result}", flush=True)
        traceback.print_exc(limit=3)

    @functools.cached_property
    def tls_security(self) -> Security:
        """TLS with a password and no plain port, from a test CA made on first use."""
        tls_files = make_test_ca(os.path.join(self.output, "x509"))
        return Security(tls=tls_files, password="bench", plain_port=False)


@dataclass(frozen=True)
class Unit:
    """One unit of work of a step: it prints one progress line."""
    what: str  # the progress line's label
    # measures and records; returns the progress line's result, or None when
    # an error line took its place
    run: Callable[[Bench], str | None]


class Step(Protocol):
    """A kind of measurement: --only's name for it, the lists of results.json
    it fills, and its units of work."""
    name: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]

    def plan(self) -> Iterator[Unit]: ...


# -- the steps ------------------------------------------------------------------


@dataclass(frozen=True)
class TtffCase:
    codec: str
    w: int
    h: int
    content: str

    @property
    def tag(self) -> str:
        return f"{self.codec:5s} {self.w}x{self.h} {self.content:7s}"


@dataclass(frozen=True)
class Ttff:
    """1. TTFF on an idle VM, patched (several runs, each beside a reference
    run) and stock (one run, pattern only); stock's reference runs."""
    name: ClassVar[str] = "ttff"
    keys: ClassVar[tuple[str, ...]] = ("ttff", "ref")
    resolutions: list[tuple[int, int]]
    contents: list[str]
    codecs: list[str]
    patched_runs: dict[str, int]  # per content
    stock_runs: int
    window: float
    stock_window: float

    def plan(self) -> Iterator[Unit]:
        for (w, h), content, codec in itertools.product(self.resolutions, self.contents,
                                                       self.codecs):
            case = TtffCase(codec, w, h, content)
            for i in range(self.patched_runs[content]):
                yield Unit(f"ttff patched {case.tag} run {i + 1}", functools.partial(
                    self.patched, case))
                yield self.reference_unit(case, "patched", i)
            for i in range(self.stock_runs):
                yield self.reference_unit(case, "stock", i)
            if content == "pattern":
                yield Unit(f"ttff stock   {case.tag}", functools.partial(self.stock, case))

    def reference_unit(self, case: TtffCase, variant: str, i: int) -> Unit:
        return Unit(f"ref  {variant:7s} {case.tag} run {i + 1}",
                    functools.partial(self.reference, case, variant))

    def patched(self, case: TtffCase, bench: Bench) -> str | None:
        r = bench.measure(f"ttff patched {case.tag}", lambda: measure.ttff_run(
            "patched", case.codec, case.w, case.h, case.content, self.window))
        if not r:
            return None
        bench.results["ttff"].append(r)
        return (f"TTFF {fmt_ms(r['ttff_ms'])} (ready {fmt_ms(r['ready_ms'])}, "
                f"warm draw->pixels {fmt_ms(r.get('warm_draw_px_ms'))})")

    def reference(self, case: TtffCase, variant: str, bench: Bench) -> str | None:
        """One ordinary QEMU draw -> pixels run (the TTFF reference)."""
        r = bench.measure(f"ref {variant} {case.tag}", lambda: measure.ref_run(
            variant, case.codec, case.w, case.h, case.content))
        if not r:
            return None
        bench.results["ref"].append(r)
        return (f"draw->pixels {fmt_ms(r['draw_px_ms'])} "
                f"(complete {fmt_ms(r['draw_done_ms'])})")

    def stock(self, case: TtffCase, bench: Bench) -> str | None:
        r = bench.measure(f"ttff stock {case.tag}", lambda: measure.ttff_run(
            "stock", case.codec, case.w, case.h, case.content, self.stock_window,
            warm_draw=False))
        if not r:
            return None
        bench.results["ttff"].append(r)
        shown = (f"no frame in {self.stock_window:g} s" if r["ttff_ms"] is None
                 else f"TTFF {fmt_ms(r['ttff_ms'])}")
        return f"{shown} (ready {fmt_ms(r['ready_ms'])})"


@dataclass(frozen=True)
class Floor:
    """2. The encode floor: floor.py per codec, in a process of its own."""
    name: ClassVar[str] = "floor"
    keys: ClassVar[tuple[str, ...]] = ("floor",)
    codecs: list[str]
    reps: int
    resolutions: list[tuple[int, int]]
    contents: list[str]

    def plan(self) -> Iterator[Unit]:
        for codec in self.codecs:
            yield Unit(f"floor {codec}", functools.partial(self.run, codec))

    def run(self, codec: str, bench: Bench) -> str:
        sizes = ",".join(f"{w}x{h}" for w, h in self.resolutions)
        try:
            cp = subprocess.run(
                [sys.executable, os.path.join(HERE, "floor.py"), codec,
                 str(self.reps), sizes, ",".join(self.contents)],
                capture_output=True, text=True, timeout=600, check=True)
            rows = json.loads(cp.stdout)
            bench.results["floor"] += rows
            return ", ".join(f"{r['w']}x{r['h']} {r['content']} "
                             f"{report.median([x['total_ms'] for x in r['runs']]):.0f} ms"
                             for r in rows)
        except Exception as e:  # noqa: BLE001 (recorded; the next unit runs)
            stderr = getattr(e, "stderr", "") or ""
            bench.results["errors"].append(f"floor {codec}: {e} {stderr[-500:]}")
            return f"ERROR {e}"


@dataclass(frozen=True)
class Steady:
    """3. Steady state at 1920x1080: draw -> complete and server CPU per draw;
    instructions per draw under callgrind."""
    name: ClassVar[str] = "steady"
    keys: ClassVar[tuple[str, ...]] = ("steady",)
    codecs: list[str]
    draws: int
    period: float
    callgrind_draws: int
    callgrind_period: float
    callgrind: bool  # valgrind is there and not --no-callgrind

    def plan(self) -> Iterator[Unit]:
        for codec in self.codecs:
            for variant in VARIANTS:
                yield Unit(f"steady {variant} {codec} {self.draws} draws",
                           functools.partial(self.native, codec, variant))
            if self.callgrind:
                for variant in VARIANTS:
                    yield Unit(f"callgrind {variant} {codec} {self.callgrind_draws} draws",
                               functools.partial(self.under_callgrind, codec, variant))

    def native(self, codec: str, variant: str, bench: Bench) -> str | None:
        r = bench.measure(f"steady {variant} {codec}", lambda: measure.steady_run(
            variant, codec, 1920, 1080, self.draws, self.period))
        if not r:
            return None
        bench.results["steady"].append(r)
        done_ms = r["done_ms"]
        return (f"draw->complete median {report.median(done_ms):.1f} ms "
                f"p95 {report.pct(done_ms, 95):.1f} max {max(done_ms):.1f}; "
                f"CPU {r['cpu_ms_per_draw']:.2f} ms/draw")

    def under_callgrind(self, codec: str, variant: str, bench: Bench) -> str | None:
        cg_dir = tempfile.mkdtemp(prefix="cg-", dir=bench.output)
        try:
            r = bench.measure(f"callgrind {variant} {codec}", lambda: measure.steady_run(
                variant, codec, 1920, 1080, self.callgrind_draws, self.callgrind_period,
                callgrind_dir=cg_dir))
        finally:
            shutil.rmtree(cg_dir, ignore_errors=True)
        if not r:
            return None
        bench.results["steady"].append(r)
        return (f"{r['instructions_per_draw'] / 1e6:.1f} M "
                f"instructions/draw, {r['client_frames']} frames shown")


@dataclass(frozen=True)
class Idle:
    """3b. Server CPU of an idle VM, after a draw and after a connect."""
    name: ClassVar[str] = "idle"
    keys: ClassVar[tuple[str, ...]] = ("idle",)
    window_s: float

    def plan(self) -> Iterator[Unit]:
        for case, variant in itertools.product(IDLE_CASES, VARIANTS):
            yield Unit(f"idle {variant:7s} after a {case}",
                       functools.partial(self.run, case, variant))

    def run(self, case: str, variant: str, bench: Bench) -> str | None:
        r = bench.measure(f"idle {variant} {case}",
                          lambda: measure.idle_run(variant, case, self.window_s))
        if not r:
            return None
        bench.results["idle"].append(r)
        return (f"{100 * r['core_share']:.1f} % of a core over "
                f"{r['window_s']:g} s (picture shown: {r['shown']})")


@dataclass(frozen=True)
class Repeat:
    """3c. The fragile scenario (a second client of an idle VM), repeated:
    its failure rate."""
    name: ClassVar[str] = "repeat"
    keys: ClassVar[tuple[str, ...]] = ("repeat",)
    codecs: list[str]
    patched_runs: int
    stock_runs: int

    def plan(self) -> Iterator[Unit]:
        for codec, variant in itertools.product(self.codecs, VARIANTS):
            yield Unit(f"second client {variant:7s} {codec}",
                       functools.partial(self.run, codec, variant))

    def run(self, codec: str, variant: str, bench: Bench) -> str:
        patched = variant == "patched"
        runs = self.patched_runs if patched else self.stock_runs
        window_s = 15.0 if patched else 3.0
        rows = [r for _ in range(runs)
                if (r := bench.measure(f"second client {variant} {codec}",
                                       lambda: measure.second_client_run(
                                           variant, codec, window_s),
                                       error_is_step=False))]
        failed = sum(1 for r in rows if not r["shown"])
        late = sum(1 for r in rows if r["late_frames"])
        bench.results["repeat"].append({
            "variant": variant, "codec": codec, "runs": len(rows), "failed": failed,
            "late_runs": late, "window_s": rows[0]["window_s"] if rows else None})
        return f"{failed} of {len(rows)} runs failed, {late} with a late frame"


@dataclass(frozen=True)
class Tls:
    """3d. TTFF over TLS with a password against plain TCP (patched, 1920x1080
    pattern)."""
    name: ClassVar[str] = "tls"
    keys: ClassVar[tuple[str, ...]] = ("tls",)
    codecs: list[str]
    runs: int
    window: float

    def plan(self) -> Iterator[Unit]:
        for codec, transport in itertools.product(self.codecs, ("tcp", "tls")):
            yield Unit(f"ttff {transport} patched {codec} 1920x1080",
                       functools.partial(self.run, codec, transport))

    def run(self, codec: str, transport: str, bench: Bench) -> str:
        security = bench.tls_security if transport == "tls" else None
        rows = [r for _ in range(self.runs)
                if (r := bench.measure(f"ttff {transport} {codec}", lambda: measure.ttff_run(
                    "patched", codec, 1920, 1080, "pattern", self.window,
                    warm_draw=False, security=security), error_is_step=False))]
        bench.results["tls"] += rows
        shown_ms = [r["ttff_ms"] for r in rows if r["ttff_ms"] is not None]
        return (f"{len(shown_ms)}/{len(rows)} shown, TTFF median "
                f"{fmt_ms(report.median(shown_ms) if shown_ms else None)}")


@dataclass(frozen=True)
class Net:
    """3e. Shaped links: TTFF, draw -> pixels, QEMU 10.1 steady state."""
    name: ClassVar[str] = "net"
    keys: ClassVar[tuple[str, ...]] = ("net",)
    steady_draws: int

    def plan(self) -> Iterator[Unit]:
        for link, variant in itertools.product(NET_PROFILES, VARIANTS):
            yield Unit(f"net {variant:7s} {link:5s} h264 1920x1080",
                       functools.partial(self.run, link, variant))

    def run(self, link: str, variant: str, bench: Bench) -> str | None:
        r = bench.measure(f"net {variant} {link}", lambda: measure.net_run(
            variant, link, steady_draws=self.steady_draws))
        if not r:
            return None
        bench.results["net"].append(r)
        return (f"TTFF {fmt_ms(r['ttff_ms'])} (ready {fmt_ms(r['ready_ms'])}), "
                f"draw->pixels {fmt_ms(r['draw_px_ms'])}, "
                f"{r['frames_shown']} frames of {r['steady_draws']} draws")


@dataclass(frozen=True)
class Storm:
    """4. Connect storm (1920x1080 MJPEG): TTFF per client; with a QEMU draw
    during the storm, its completion latency."""
    name: ClassVar[str] = "storm"
    keys: ClassVar[tuple[str, ...]] = ("storm",)
    sizes: list[int]
    window: float
    stock_window: float

    def plan(self) -> Iterator[Unit]:
        for n, with_draw, variant in itertools.product(self.sizes, (False, True), VARIANTS):
            yield Unit(f"storm {variant:7s} {n:2d} clients{' + draw' if with_draw else ''}",
                       functools.partial(self.run, n, with_draw, variant))

    def run(self, n: int, with_draw: bool, variant: str, bench: Bench) -> str | None:
        window = self.window if variant == "patched" else self.stock_window
        r = bench.measure(f"storm {variant} {n}", lambda: measure.storm_run(
            variant, "mjpeg", 1920, 1080, n, window, with_draw))
        if not r:
            return None
        bench.results["storm"].append(r)
        shown_ms = [t for t in r["ttff_ms"] if t is not None]
        result = (f"{len(shown_ms)}/{n} clients show it"
                  + (f", TTFF median {report.median(shown_ms):.0f} worst "
                     f"{max(shown_ms):.0f} ms" if shown_ms else f" (window {window:g} s)"))
        if with_draw:
            result += f"; draw during storm completes in {fmt_ms(r.get('draw_done_ms'))}"
        return result


@dataclass(frozen=True)
class Repro:
    """5. Wall time of the race reproductions of tests/test_races.py."""
    name: ClassVar[str] = "repro"
    keys: ClassVar[tuple[str, ...]] = ("repro",)
    runs: int

    def plan(self) -> Iterator[Unit]:
        import repro_time  # only when asked for: it imports the testing package
        for repro, variant, i in itertools.product(repro_time.names(), VARIANTS,
                                                   range(self.runs)):
            yield Unit(f"repro {variant:7s} {repro} run {i + 1}",
                       functools.partial(self.run, repro, variant))

    def run(self, repro: str, variant: str, bench: Bench) -> str | None:
        import repro_time
        r = bench.measure(f"repro {variant} {repro}", lambda: repro_time.run(repro, variant))
        if not r:
            return None
        bench.results["repro"].append(r)
        return f"{r['took_s']:.1f} s, {r['defects']} defect(s)"


@dataclass(frozen=True)
class Live:
    """6. Live frames (bench/live.py): numbered guest draws to a client
    that shows the picture, per scenario x codec, stock and patched."""
    name: ClassVar[str] = "live"
    keys: ClassVar[tuple[str, ...]] = ("live",)
    codecs: list[str]
    quick: bool

    def plan(self) -> Iterator[Unit]:
        for scenario, codec, variant in itertools.product(live.SCENARIOS, self.codecs,
                                                          VARIANTS):
            yield Unit(f"live {variant:7s} {scenario:8s} {codec:5s} 1920x1080",
                       functools.partial(self.run, scenario, codec, variant))

    def run(self, scenario: str, codec: str, variant: str, bench: Bench) -> str | None:
        r = bench.measure(f"live {variant} {scenario} {codec}",
                          lambda: live.run(scenario, codec, variant, self.quick))
        if not r:
            return None
        bench.results["live"].append(r)
        return live.progress_line(r)


STEP_KINDS: tuple[type[Step], ...] = (Ttff, Floor, Steady, Idle, Repeat, Tls, Net, Storm,
                                      Repro, Live)
STEP_NAMES = tuple(kind.name for kind in STEP_KINDS)


def make_steps(names: set[str], p: dict[str, Any], callgrind: bool) -> list[Step]:
    """The steps named, in STEP_KINDS' order, from the profile's parameters."""
    every: list[Step] = [
        Ttff(p["resolutions"], p["contents"], p["codecs"], p["runs"], p["stock_runs"],
             p["window"], p["stock_window"]),
        Floor(p["codecs"], p["floor_reps"], p["resolutions"], p["contents"]),
        Steady(p["steady_codecs"], p["steady_draws"], p["steady_period"],
               p["callgrind_draws"], p["callgrind_period"], callgrind),
        Idle(p["idle_window"]),
        Repeat(p["codecs"], p["repeat_runs"], p["stock_repeat_runs"]),
        Tls(p["codecs"], p["tls_runs"], p["window"]),
        Net(p["net_steady_draws"]),
        Storm(p["storm_sizes"], p["storm_window"], p["stock_storm_window"]),
        Repro(p["repro_runs"]),
        Live(p["codecs"], p["live_quick"]),
    ]
    assert tuple(step.name for step in every) == STEP_NAMES
    return [step for step in every if step.name in names]


# -- main -----------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="./run bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True)
    ap.add_argument("--quick", action="store_true",
                    help="few runs, 1920x1080 only, storms of 1 and 4 (a smoke check)")
    ap.add_argument("--only", default=",".join(STEP_NAMES),
                    help="comma-separated subset of " + ",".join(STEP_NAMES))
    ap.add_argument("--codecs", help="comma-separated subset of " + ",".join(CODECS))
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--plan", action="store_true",
                    help="list the progress lines the options plan, and their total; "
                         "measure nothing")
    return ap.parse_args()


def params_of(args: argparse.Namespace) -> dict[str, Any]:
    params = profile(args.quick)
    if args.codecs:
        params["codecs"] = [c for c in args.codecs.split(",") if c]
    return params


def chosen_steps(args: argparse.Namespace, params: dict[str, Any]) -> list[Step]:
    has_callgrind = bool(shutil.which("valgrind") and shutil.which("callgrind_control"))
    return make_steps(set(args.only.split(",")), params,
                      callgrind=has_callgrind and not args.no_callgrind)


def print_plan(steps: list[Step]) -> None:
    units_per_step = {step.name: list(step.plan()) for step in steps}
    total = sum(len(units) for units in units_per_step.values())
    units = itertools.chain.from_iterable(units_per_step.values())
    for n, unit in enumerate(units, 1):
        print(f"[{n:3d}/{total}] {unit.what}")
    print(f"{total} progress lines: " + ", ".join(
        f"{name} {len(units)}" for name, units in units_per_step.items()))


def command_of(args: argparse.Namespace) -> str:
    """The ./run bench command with these options (--output is ./run's)."""
    words = ["./run bench", *(["--quick"] if args.quick else [])]
    if args.only != ",".join(STEP_NAMES):
        words.append(f"--only {args.only}")
    if args.codecs:
        words.append(f"--codecs {args.codecs}")
    if args.no_callgrind:
        words.append("--no-callgrind")
    return " ".join(words)


def previous_results(output: str) -> dict[str, Any]:
    """results.json as an earlier run left it ({} if there is none, or with a
    warning if it cannot be read)."""
    path = os.path.join(output, "results.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"warning: {path} cannot be read ({e}); the steps this run leaves out "
              "will have no rows", file=sys.stderr, flush=True)
        return {}


def new_results(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """A run's results.  A run of some steps (--only) keeps the rows the
    other steps have in --output's results.json, and `measured` says which
    run measured each step's rows."""
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    command = command_of(args)
    profile_name = "quick" if args.quick else "full"
    chosen = set(args.only.split(","))
    results: dict[str, Any] = {
        "profile": profile_name, "params": params, "started": started,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "cpu": _cpu_model(), "loadavg_start": os.getloadavg()},
        "command": command,
        **{key: [] for kind in STEP_KINDS for key in kind.keys},
        "measured": {}, "errors": []}
    earlier = previous_results(args.output) if chosen != set(STEP_NAMES) else {}
    for kind in STEP_KINDS:
        if kind.name in chosen:
            results["measured"][kind.name] = {"command": command, "started": started,
                                              "profile": profile_name}
        elif kind.name in earlier.get("measured", {}) or any(earlier.get(k) for k in kind.keys):
            for key in kind.keys:
                results[key] = earlier.get(key, [])
            results["measured"][kind.name] = earlier.get("measured", {}).get(kind.name, {
                "command": earlier.get("command", "?"), "started": earlier.get("started", "?"),
                "profile": earlier.get("profile", "?")})
    try:
        import spice_initial_draw
        results["library"] = {v: spice_initial_draw.variants.variant_library(v)
                               for v in VARIANTS}
        results["series"] = _series()
        results["series_sha256"] = _series_hashes()
    except Exception as e:  # noqa: BLE001 (informative only)
        results["errors"].append(f"build info: {e}")
    return results


def finish(bench: Bench) -> int:
    """Writes results.json, results.md and the plots; 1 if a step had an error."""
    results = bench.results
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["elapsed_s"] = round(time.monotonic() - bench.progress.t0, 1)
    _save(bench.output, results)
    summary = report.write(bench.output, results)
    print(summary, flush=True)
    print(f"results: {bench.output}/results.json, results.md, "
          + ", ".join(sorted(p for p in os.listdir(bench.output) if p.endswith('.png'))))
    return 1 if results["errors"] else 0


def main() -> int:
    args = parse_args()
    params = params_of(args)
    steps = chosen_steps(args, params)
    if args.plan:
        print_plan(steps)
        return 0
    os.makedirs(args.output, exist_ok=True)
    units = [unit for step in steps for unit in step.plan()]
    progress = Progress(len(units))
    bench = Bench(args.output, new_results(args, params), progress)
    for unit in units:
        bench.run(unit)
    return finish(bench)


def _save(out: str, results: dict[str, Any]) -> None:
    tmp = os.path.join(out, "results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, os.path.join(out, "results.json"))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _series_hashes() -> dict[str, str]:
    import hashlib
    top = os.environ.get("SID_TOP", os.path.dirname(HERE))
    out = {}
    for name in _series():
        try:
            with open(os.path.join(top, "spice_patch", name), "rb") as f:
                out[name] = hashlib.sha256(f.read()).hexdigest()[:16]
        except OSError:
            out[name] = "missing"
    return out


def _series() -> list[str]:
    """The patches of every series, in order, as DIR/PATCH."""
    from spice_initial_draw.testing.patch_stats import read_series
    top = os.environ.get("SID_TOP", os.path.dirname(HERE))
    try:
        return [f"{s.name}/{p.name}" for s in read_series(Path(top) / "spice_patch")
                for p in s.patches]
    except OSError:
        return []


if __name__ == "__main__":
    sys.exit(main())
