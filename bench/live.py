"""The live-frame step (issue 26): the guest draws numbered frames at a
steady rate to a real spice-gtk client that already shows its picture
(spice_initial_draw.testing.live), per scenario x codec, stock and patched
in the same run; the table and the targets, each a ratio against stock."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from spice_initial_draw.netshape import PROFILES
from spice_initial_draw.testing.live import RECOVERY_MARGIN_MS, SLOW_LINK, LiveCase, run_live

Row = dict[str, Any]

# scenario -> its stream at 1920x1080 (codec filled in per unit)
SCENARIOS: dict[str, LiveCase] = {
    "loopback": LiveCase("", rate=30, duration_s=4.0),
    "wan": LiveCase("", rate=30, duration_s=4.0, link=PROFILES["wan"]),
    "stall": LiveCase("", rate=30, duration_s=8.0, stall_at_s=2.5, stall_s=0.5),
    "2mbit": LiveCase("", rate=60, duration_s=4.0, link=SLOW_LINK),
}
QUICK_DURATION_S = {"loopback": 2.0, "wan": 2.0, "stall": 6.5, "2mbit": 2.0}
QUICK_STALL_AT_S = 1.0
LABELS = {
    "loopback": "loopback, 30 draws/s",
    "wan": "the `wan` profile (80 ms ± 5 ms round trip, 20 Mbit/s), 30 draws/s",
    "stall": "loopback, 30 draws/s, the client stopped once for 500 ms",
    "2mbit": "60 draws/s through 2 Mbit/s with 20 ms each way",
}
# targets (issue 26), against stock in the same run
PX_PLUS_MS, PX_RATIO = 3.0, 1.05          # draw -> pixels, loopback and wan
RECOVERY_TARGET_MS = 2000.0               # back within RECOVERY_MARGIN_MS of before
DRAWS_TOLERANCE = 0.01                    # draws/s >= stock's - 1 % (the pacing's jitter)


def case_of(scenario: str, codec: str, quick: bool) -> LiveCase:
    case = replace(SCENARIOS[scenario], codec=codec)
    if quick:
        case = replace(case, duration_s=QUICK_DURATION_S[scenario])
        if case.stall_at_s is not None:
            case = replace(case, stall_at_s=QUICK_STALL_AT_S)
    return case


def run(scenario: str, codec: str, variant: str, quick: bool) -> Row:
    row = run_live(variant, case_of(scenario, codec, quick)).summary()
    row["scenario"] = scenario
    return row


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}"


def progress_line(r: Row) -> str:
    line = (f"{r['shown']}/{r['drawn']} shown, draw->pixels {_ms(r['px_median_ms'])} ms "
            f"(p95 {_ms(r['px_p95_ms'])}), {r['draws_per_s']:.1f} draws/s, "
            f"draw->complete {_ms(r['done_median_ms'])} ms, last draw "
            f"{'shown' if r['last_shown'] else 'NOT shown'}")
    if "stall" in r:
        s = r["stall"]
        line += (f"; stall: before {_ms(s['before_median_ms'])} ms, 5 s after "
                 f"{_ms(s['after_5s_median_ms'])} ms, back in "
                 f"{'never' if s['recovery_ms'] is None else _ms(s['recovery_ms']) + ' ms'}")
    return line


def table(rows: list[Row], scenario: str) -> str:
    stall = scenario == "stall"
    out = ["| codec | variant | shown / drawn | draw → pixels median / p95, ms "
           "| draws/s | draw → async_complete median, ms | last draw shown | frame 0 shown |"
           + (" before the stall, ms | 5 s after, ms | back within 10 ms in, ms |" if stall
              else ""),
           "|---|---|---|---|---|---|---|---|" + ("---|---|---|" if stall else "")]
    for r in rows:
        if r["scenario"] != scenario:
            continue
        line = (f"| {r['codec']} | {r['variant']} | {r['shown']} / {r['drawn']} | "
                f"{_ms(r['px_median_ms'])} / {_ms(r['px_p95_ms'])} | {r['draws_per_s']:.1f} | "
                f"{_ms(r['done_median_ms'])} | {'yes' if r['last_shown'] else 'no'} | "
                f"{'yes' if r.get('first_shown') else 'no'} |")
        if stall and "stall" in r:
            s = r["stall"]
            line += (f" {_ms(s['before_median_ms'])} | {_ms(s['after_5s_median_ms'])} | "
                     f"{'never' if s['recovery_ms'] is None else _ms(s['recovery_ms'])} |")
        out.append(line)
    return "\n".join(out)


def _pairs(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(stock, patched) rows of the same scenario and codec."""
    stock = {(r["scenario"], r["codec"]): r for r in rows if r["variant"] == "stock"}
    return [(stock[(r["scenario"], r["codec"])], r) for r in rows
            if r["variant"] == "patched" and (r["scenario"], r["codec"]) in stock]


def _px_ok(stock: Row, patched: Row) -> bool:
    """draw -> pixels median within stock + PX_PLUS_MS or PX_RATIO x stock."""
    sm, pm = stock["px_median_ms"], patched["px_median_ms"]
    return pm is not None and (pm <= sm + PX_PLUS_MS or pm <= sm * PX_RATIO)


def _verdict(name: str, misses: list[str], judged: int) -> str:
    return (f"- {name}: {judged - len(misses)} of {judged} met"
            + ("" if not misses else "; **missed**: " + ", ".join(misses)))


def targets(rows: list[Row]) -> list[str]:
    """Issue 26's targets for live frames, each patched against stock in
    the same run: one line each, what was met and what was missed."""
    pairs = _pairs(rows)
    lines = []
    px = [(s, p) for s, p in pairs if s["scenario"] in ("loopback", "wan")]
    unmatched = [f"{p['scenario']} {p['codec']}" for s, p in px if s["px_median_ms"] is None]
    px = [(s, p) for s, p in px if s["px_median_ms"] is not None]
    misses = [f"{p['scenario']} {p['codec']} ({_ms(p['px_median_ms'])} vs "
              f"{_ms(s['px_median_ms'])} ms)" for s, p in px if not _px_ok(s, p)]
    lines.append(_verdict(f"draw → pixels median ≤ stock + {PX_PLUS_MS:g} ms or ≤ "
                          f"{PX_RATIO} × stock (loopback, wan)", misses, len(px))
                 + ("" if not unmatched else
                    "; no stock median to compare with (stock showed no frame): "
                    + ", ".join(unmatched)))
    stalled = [p for _, p in pairs if "stall" in p]
    misses = [f"{p['codec']} ({_ms(t) if t is not None else 'never'})" for p in stalled
              if (t := p["stall"]["recovery_ms"]) is None or t > RECOVERY_TARGET_MS]
    lines.append(_verdict(f"after the stall, back within {RECOVERY_MARGIN_MS:g} ms of the "
                          f"median before it within {RECOVERY_TARGET_MS / 1e3:g} s",
                          misses, len(stalled)))
    misses = [f"{p['scenario']} {p['codec']} ({p['draws_per_s']:.1f} vs {s['draws_per_s']:.1f})"
              for s, p in pairs if p["draws_per_s"] < s["draws_per_s"] * (1 - DRAWS_TOLERANCE)]
    lines.append(_verdict(f"guest draws/s ≥ stock's (− {DRAWS_TOLERANCE:.0%})",
                          misses, len(pairs)))
    misses = [f"{p['scenario']} {p['codec']} ({p['shown']} vs {s['shown']})"
              for s, p in pairs if p["shown"] < s["shown"]]
    lines.append(_verdict("frames shown ≥ stock's", misses, len(pairs)))
    patched = [r for r in rows if r["variant"] == "patched"]
    misses = [f"{r['scenario']} {r['codec']}" for r in patched if not r["last_shown"]]
    stock_missed = sum(1 for r in rows if r["variant"] == "stock" and not r["last_shown"])
    lines.append(_verdict("the last draw shown in every patched run", misses, len(patched))
                 + f" (stock missed it in {stock_missed} runs)")
    return lines


def markdown(rows: list[Row]) -> list[str]:
    """The live-frame section of results.md."""
    if not rows:
        return []
    md = ["## Live frames: numbered guest draws to a client showing the picture "
          "(1920×1080)", ""]
    for scenario in SCENARIOS:
        if any(r["scenario"] == scenario for r in rows):
            md += [f"### {LABELS[scenario]}", "", table(rows, scenario), ""]
    durations = sorted({(r["scenario"], r["duration_s"]) for r in rows})
    md += ["The guest paints its frame number into its own buffer (16 bits and their "
           "inverse as black and white blocks) and draws at the rate given, never before "
           "its previous draw completed (QEMU blocks the console until async_complete; a "
           "late completion costs it the tick).  The real spice-gtk client samples the "
           "block centres at every display-invalidate: draw → pixels is from the shim's "
           "draw to the first invalidate that shows that number (one CLOCK_MONOTONIC).  "
           "Draws/s: completed draws over the stream.  Last draw shown: within 2 s after "
           "it.  Frame 0: before the stream the guest draws its first picture until the "
           "client shows it (up to 5 s).  Stall: SIGSTOP/SIGCONT of the client process; "
           "\"back\" = the first 5 consecutive shown frames drawn after it whose median "
           f"is within {RECOVERY_MARGIN_MS:g} ms of the median before it.  Stream lengths: "
           + ", ".join(f"{s} {d:g} s" for s, d in durations) + ".", "",
           "Targets, patched against stock in the same run:", "", *targets(rows), ""]
    return md
