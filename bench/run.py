"""`./run bench [--quick] [...]`: the benchmarks of spice-initial-draw (not
tests).  Writes results.json, results.md and PNG plots to --output.

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
    find, not how long they take.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import measure  # noqa: E402
import report  # noqa: E402

from spice_initial_draw.codecs import VIDEO_CODECS  # noqa: E402
from spice_initial_draw.security import Security, make_test_ca  # noqa: E402

CODECS = VIDEO_CODECS
NET_PROFILES = ("lan", "metro", "wan", "poor")
IDLE_CASES = ("draw", "connect")
RESOLUTIONS = ((1280, 720), (1920, 1080), (3840, 2160))


def profile(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(resolutions=[(1920, 1080)], codecs=list(CODECS),
                    contents=["pattern", "noise"], runs={"pattern": 2, "noise": 1},
                    stock_runs=1, stock_window=2.0, window=15.0,
                    floor_reps=2, steady_draws=60, steady_period=0.03,
                    callgrind_draws=10, callgrind_period=0.25, steady_codecs=["mjpeg"],
                    storm_sizes=[1, 4], storm_window=10.0, stock_storm_window=2.0,
                    repro_runs=1, idle_window=5.0, repeat_runs=5, stock_repeat_runs=1,
                    tls_runs=2, net_steady_draws=90)
    return dict(resolutions=list(RESOLUTIONS), codecs=list(CODECS),
                contents=["pattern", "noise"], runs={"pattern": 5, "noise": 3},
                stock_runs=2, stock_window=5.0, window=10.0,
                floor_reps=5, steady_draws=300, steady_period=0.03,
                callgrind_draws=40, callgrind_period=0.25, steady_codecs=["mjpeg", "h264"],
                storm_sizes=[1, 4, 16], storm_window=20.0, stock_storm_window=5.0,
                repro_runs=3, idle_window=10.0, repeat_runs=20, stock_repeat_runs=3,
                tls_runs=5, net_steady_draws=300)


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


def main() -> int:
    ap = argparse.ArgumentParser(prog="./run bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True)
    ap.add_argument("--quick", action="store_true",
                    help="few runs, 1920x1080 only, storms of 1 and 4 (a smoke check)")
    ap.add_argument("--only", default="ttff,floor,steady,idle,repeat,tls,net,storm,repro",
                    help="comma-separated subset of "
                         "ttff,floor,steady,idle,repeat,tls,net,storm,repro")
    ap.add_argument("--codecs", help="comma-separated subset of " + ",".join(CODECS))
    ap.add_argument("--no-callgrind", action="store_true")
    args = ap.parse_args()
    P = profile(args.quick)
    if args.codecs:
        P["codecs"] = [c for c in args.codecs.split(",") if c]
    only = set(args.only.split(","))
    os.makedirs(args.output, exist_ok=True)
    have_cg = shutil.which("valgrind") and shutil.which("callgrind_control") \
        and not args.no_callgrind

    # plan the steps (for the progress counter)
    ttff_plan = []
    if "ttff" in only:
        for (w, h) in P["resolutions"]:
            for content in P["contents"]:
                for codec in P["codecs"]:
                    ttff_plan.append((w, h, content, codec))
    n_steps = 0
    for (w, h, content, codec) in ttff_plan:
        n_steps += P["runs"][content] * 2 + P["stock_runs"]
        if content == "pattern":
            n_steps += 1
    if "floor" in only:
        n_steps += len(P["codecs"])
    if "steady" in only:
        n_steps += len(P["steady_codecs"]) * 2 * (2 if have_cg else 1)
    if "idle" in only:
        n_steps += len(IDLE_CASES) * 2
    if "repeat" in only:
        n_steps += len(P["codecs"]) * 2
    if "tls" in only:
        n_steps += len(P["codecs"]) * 2
    if "net" in only:
        n_steps += len(NET_PROFILES) * 2
    if "storm" in only:
        n_steps += len(P["storm_sizes"]) * 2 * 2
    if "repro" in only:
        import repro_time
        n_steps += len(repro_time.names()) * 2 * P["repro_runs"]
    prog = Progress(n_steps)

    results: dict[str, Any] = dict(
        profile="quick" if args.quick else "full", params=P,
        started=time.strftime("%Y-%m-%d %H:%M:%S"),
        machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
                     cpu=_cpu_model(), loadavg_start=os.getloadavg()),
        command="./run bench" + (" --quick" if args.quick else ""),
        ttff=[], ref=[], floor=[], steady=[], idle=[], repeat=[], tls=[], net=[], storm=[],
        repro=[],
        errors=[])
    try:
        import spice_initial_draw
        results["library"] = {v: spice_initial_draw.variants.variant_library(v)
                               for v in ("stock", "patched")}
        results["series"] = _series()
        results["series_sha256"] = _series_hashes()
    except Exception as e:  # informative only
        results["errors"].append(f"build info: {e}")

    def guarded(what: str, fn: Any, *a: Any, **kw: Any) -> dict[str, Any] | None:
        for attempt in range(4):
            try:
                return fn(*a, **kw)
            except Exception as e:
                # another ./run rebuilding the package under us: the worker
                # cannot even import the shim; wait and retry
                if "during info()" in str(e) and attempt < 3:
                    print(f"    {what}: server failed to start, retrying in 20 s "
                          "(concurrent rebuild?)", flush=True)
                    time.sleep(20)
                    continue
                results["errors"].append(f"{what}: {type(e).__name__}: {e}")
                prog.step(what, f"ERROR {type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200]}")
                traceback.print_exc(limit=3)
                return None
        return None

    def reference(tag: str, variant: str, codec: str, w: int, h: int,
                  content: str, i: int) -> None:
        """One ordinary QEMU draw -> pixels run (the TTFF reference)."""
        r = guarded(f"ref {variant} {tag}", measure.ref_run, variant, codec,
                    w, h, content)
        if r:
            results["ref"].append(r)
            prog.step(f"ref  {variant:7s} {tag} run {i + 1}",
                      f"draw->pixels {fmt_ms(r['draw_px_ms'])} "
                      f"(complete {fmt_ms(r['draw_done_ms'])})")

    # 1. TTFF + reference ----------------------------------------------------
    for (w, h, content, codec) in ttff_plan:
        tag = f"{codec:5s} {w}x{h} {content:7s}"
        for i in range(P["runs"][content]):
            r = guarded(f"ttff patched {tag}", measure.ttff_run, "patched", codec,
                        w, h, content, P["window"])
            if r:
                results["ttff"].append(r)
                prog.step(f"ttff patched {tag} run {i + 1}",
                          f"TTFF {fmt_ms(r['ttff_ms'])} (ready {fmt_ms(r['ready_ms'])}, "
                          f"warm draw->pixels {fmt_ms(r.get('warm_draw_px_ms'))})")
            reference(tag, "patched", codec, w, h, content, i)
        for i in range(P["stock_runs"]):
            reference(tag, "stock", codec, w, h, content, i)
        if content == "pattern":
            r = guarded(f"ttff stock {tag}", measure.ttff_run, "stock", codec,
                        w, h, content, P["stock_window"], warm_draw=False)
            if r:
                results["ttff"].append(r)
                res = (f"no frame in {P['stock_window']:g} s" if r["ttff_ms"] is None
                       else f"TTFF {fmt_ms(r['ttff_ms'])}")
                prog.step(f"ttff stock   {tag}", f"{res} (ready {fmt_ms(r['ready_ms'])})")
        _save(args.output, results)

    # 2. encode floor ----------------------------------------------------------
    if "floor" in only:
        sizes = ",".join(f"{w}x{h}" for w, h in P["resolutions"])
        for codec in P["codecs"]:
            try:
                cp = subprocess.run(
                    [sys.executable, os.path.join(HERE, "floor.py"), codec,
                     str(P["floor_reps"]), sizes, ",".join(P["contents"])],
                    capture_output=True, text=True, timeout=600, check=True)
                rows = json.loads(cp.stdout)
                results["floor"] += rows
                desc = ", ".join(
                    f"{r['w']}x{r['h']} {r['content']} "
                    f"{report.median([x['total_ms'] for x in r['runs']]):.0f} ms"
                    for r in rows)
                prog.step(f"floor {codec}", desc)
            except Exception as e:
                err = getattr(e, "stderr", "") or ""
                results["errors"].append(f"floor {codec}: {e} {err[-500:]}")
                prog.step(f"floor {codec}", f"ERROR {e}")
        _save(args.output, results)

    # 3. steady state ------------------------------------------------------------
    if "steady" in only:
        for codec in P["steady_codecs"]:
            for variant in ("stock", "patched"):
                r = guarded(f"steady {variant} {codec}", measure.steady_run,
                            variant, codec, 1920, 1080, P["steady_draws"],
                            P["steady_period"])
                if r:
                    results["steady"].append(r)
                    d = r["done_ms"]
                    prog.step(f"steady {variant} {codec} {P['steady_draws']} draws",
                              f"draw->complete median {report.median(d):.1f} ms "
                              f"p95 {report.pct(d, 95):.1f} max {max(d):.1f}; "
                              f"CPU {r['cpu_ms_per_draw']:.2f} ms/draw")
            if have_cg:
                for variant in ("stock", "patched"):
                    cgdir = tempfile.mkdtemp(prefix="cg-", dir=args.output)
                    r = guarded(f"callgrind {variant} {codec}", measure.steady_run,
                                variant, codec, 1920, 1080, P["callgrind_draws"],
                                P["callgrind_period"], callgrind_dir=cgdir)
                    shutil.rmtree(cgdir, ignore_errors=True)
                    if r:
                        results["steady"].append(r)
                        prog.step(f"callgrind {variant} {codec} "
                                  f"{P['callgrind_draws']} draws",
                                  f"{r['instructions_per_draw'] / 1e6:.1f} M "
                                  f"instructions/draw, {r['client_frames']} frames shown")
            _save(args.output, results)

    # 3b. idle CPU ------------------------------------------------------------------
    if "idle" in only:
        for case in IDLE_CASES:
            for variant in ("stock", "patched"):
                r = guarded(f"idle {variant} {case}", measure.idle_run, variant, case,
                            P["idle_window"])
                if r:
                    results["idle"].append(r)
                    prog.step(f"idle {variant:7s} after a {case}",
                              f"{100 * r['core_share']:.1f} % of a core over "
                              f"{r['window_s']:g} s (picture shown: {r['shown']})")
        _save(args.output, results)

    # 3c. the fragile scenario, repeated: failure rate ------------------------------
    if "repeat" in only:
        for codec in P["codecs"]:
            for variant in ("stock", "patched"):
                runs = P["repeat_runs"] if variant == "patched" else P["stock_repeat_runs"]
                rr = []
                for _ in range(runs):
                    r = guarded(f"second client {variant} {codec}", measure.second_client_run,
                                variant, codec, 15.0 if variant == "patched" else 3.0)
                    if r:
                        rr.append(r)
                failed = sum(1 for r in rr if not r["shown"])
                late = sum(1 for r in rr if r["late_frames"])
                results["repeat"].append(dict(variant=variant, codec=codec, runs=len(rr),
                                              failed=failed, late_runs=late,
                                              window_s=rr[0]["window_s"] if rr else None))
                prog.step(f"second client {variant:7s} {codec}",
                          f"{failed} of {len(rr)} runs failed, {late} with a late frame")
        _save(args.output, results)

    # 3d. TTFF over TLS with a password against plain TCP ------------------------
    if "tls" in only:
        tls_files = make_test_ca(os.path.join(args.output, "x509"))
        secured = Security(tls=tls_files, password="bench", plain_port=False)
        for codec in P["codecs"]:
            for transport, security in (("tcp", None), ("tls", secured)):
                rr = [r for _ in range(P["tls_runs"])
                      if (r := guarded(f"ttff {transport} {codec}", measure.ttff_run,
                                       "patched", codec, 1920, 1080, "pattern",
                                       P["window"], warm_draw=False, security=security))]
                results["tls"] += rr
                got = [r["ttff_ms"] for r in rr if r["ttff_ms"] is not None]
                prog.step(f"ttff {transport} patched {codec} 1920x1080",
                          f"{len(got)}/{len(rr)} shown, TTFF median "
                          f"{fmt_ms(report.median(got) if got else None)}")
        _save(args.output, results)

    # 3e. shaped links: TTFF, draw -> pixels, QEMU 10.1 steady state ---------------
    if "net" in only:
        for name in NET_PROFILES:
            for variant in ("stock", "patched"):
                r = guarded(f"net {variant} {name}", measure.net_run, variant, name,
                            steady_draws=P["net_steady_draws"])
                if r:
                    results["net"].append(r)
                    prog.step(f"net {variant:7s} {name:5s} h264 1920x1080",
                              f"TTFF {fmt_ms(r['ttff_ms'])} (ready {fmt_ms(r['ready_ms'])}), "
                              f"draw->pixels {fmt_ms(r['draw_px_ms'])}, "
                              f"{r['frames_shown']} frames of {r['steady_draws']} draws")
        _save(args.output, results)

    # 4. connect storm -------------------------------------------------------------
    if "storm" in only:
        for n in P["storm_sizes"]:
            for with_draw in (False, True):
                for variant in ("stock", "patched"):
                    window = P["storm_window"] if variant == "patched" \
                        else P["stock_storm_window"]
                    r = guarded(f"storm {variant} {n}", measure.storm_run, variant,
                                "mjpeg", 1920, 1080, n, window, with_draw)
                    if r:
                        results["storm"].append(r)
                        got = [t for t in r["ttff_ms"] if t is not None]
                        s = (f"{len(got)}/{n} clients show it"
                             + (f", TTFF median {report.median(got):.0f} worst "
                                f"{max(got):.0f} ms" if got else f" (window {window:g} s)"))
                        if with_draw:
                            s += f"; draw during storm completes in {fmt_ms(r.get('draw_done_ms'))}"
                        prog.step(f"storm {variant:7s} {n:2d} clients"
                                  f"{' + draw' if with_draw else ''}", s)
        _save(args.output, results)

    # 5. race reproductions' wall time ---------------------------------------------
    if "repro" in only:
        for name in repro_time.names():
            for variant in ("stock", "patched"):
                for i in range(P["repro_runs"]):
                    r = guarded(f"repro {variant} {name}", repro_time.run, name, variant)
                    if r:
                        results["repro"].append(r)
                        prog.step(f"repro {variant:7s} {name} run {i + 1}",
                                  f"{r['took_s']:.1f} s, {r['defects']} defect(s)")
        _save(args.output, results)

    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["elapsed_s"] = round(time.monotonic() - prog.t0, 1)
    _save(args.output, results)
    summary = report.write(args.output, results)
    print(summary, flush=True)
    print(f"results: {args.output}/results.json, results.md, "
          + ", ".join(sorted(p for p in os.listdir(args.output) if p.endswith('.png'))))
    return 1 if results["errors"] else 0


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
    top = os.environ.get("SID_TOP", os.path.dirname(HERE))
    try:
        with open(os.path.join(top, "spice_patch", "series")) as f:
            return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    except OSError:
        return []


if __name__ == "__main__":
    sys.exit(main())
