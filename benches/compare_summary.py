#!/usr/bin/env python3
"""Summarise a benches/compare.sh log directory: every round's figure per side, the median,
min-max and spread ((max-min)/median), and the after/before ratio of the medians.

    python3 benches/compare_summary.py target/bench-logs/<stamp>
"""
import re
import statistics
import sys
from collections import OrderedDict, defaultdict
from pathlib import Path

N = r"([0-9.]+)"
# (measurement file prefix, regex, [(metric name, group index, unit)])
PATTERNS = [
    ("copy", rf"^round \d+: raw insert {N} docs/s, copy \((\w+)\) {N} docs/s, ratio {N}",
     [("copy (default strategy) docs/s", 3, ""), ("  raw insert docs/s (same rounds)", 1, ""),
      ("  copy / roofline ratio", 4, "")]),
    ("copy", rf"^\| source raw full scan \| {N} \|", [("  source raw scan docs/s", 1, "")]),
    ("copy", rf"^\| write half: synthetic source -> destination sink \| {N} \|",
     [("write half (synthetic -> dest sink) docs/s", 1, "")]),
    ("copy", rf"^\| mongoferry copy, strategy `ids` \(one run\) \| {N} \|",
     [("copy strategy ids docs/s", 1, "")]),
    ("copy", rf"^\| engine ceiling, synthetic source -> null sink, `(\w+)`, 1 KiB docs \| {N} \|",
     [("engine ceiling {1} docs/s", 2, "")]),
    ("sync", rf"^capacity: .* alone \({N} writes/s\); .*: {N} events/s = {N} x that client's rate",
     [("sync capacity events/s", 2, ""), ("sync capacity / one client's rate", 3, ""),
      ("  one client's rate (writes/s)", 1, "")]),
    ("sync", rf"^\| 100% \| {N} \| \d+ \| {N} \| {N} \| {N} \| {N} \| {N} \| {N} \|",
     [("sync step 100%: events applied/s", 4, ""), ("sync step 100%: max lag_secs", 5, ""),
      ("sync step 100%: max measured delay s", 7, "")]),
    ("sync", rf"^RSS: {N} MiB before the sync, {N} MiB when live",
     [("sync RSS live MiB (incl. load gen)", 2, "")]),
    ("move", rf"^round \d+: copy {N} docs/s, rehearsal {N} docs/s, move {N} docs/s, move / copy {N}",
     [("move docs/s", 3, ""), ("  move rehearsal docs/s", 2, ""), ("  filtered copy docs/s", 1, ""),
      ("  move / copy ratio", 4, "")]),
    ("move", rf"^\| documents moved \(deleted from the source\) per second, whole run \| {N} \({N} of the limit\)",
     [("move under --move-rate: moved/s", 1, ""), ("  move under limit: fraction of limit", 2, "")]),
    ("memory", rf"^\| (sample|pymongo) \| (\d+) \| {N} \| {N} \| {N} \|",
     [("peak RSS MiB {1} {2} docs @{3}MiB", 4, ""), ("  copy docs/s {1} {2} docs", 5, "")]),
    ("memory", rf"^\| (sample|pymongo) \| (10) \| {N} \| {N} \| – \|",
     [("peak RSS MiB fixed overhead ({1}, 10 docs)", 4, "")]),
    ("memory", rf"^(sample|pymongo) documents: peak memory growth .*: {N}x",
     [("peak RSS growth {1} (last/first size)", 2, "")]),
]


def main(logdir: Path) -> None:
    values = OrderedDict()  # metric -> side -> [values]
    failures = []
    for log in sorted(logdir.glob("*.log"), key=lambda p: p.stat().st_mtime):
        name, side = log.stem.rsplit(".", 1)
        kind = name.split("-")[0]
        text = log.read_text(errors="replace")
        m = re.search(r"^# end .* exit (\d+)", text, re.M)
        if not m or m.group(1) != "0":
            tail = [l for l in text.splitlines() if l.strip() and not l.startswith("#")][-3:]
            failures.append(f"{log.name}: exit {m.group(1) if m else '?'}: " + " / ".join(tail))
        for prefix, rx, metrics in PATTERNS:
            if prefix != kind:
                continue
            for line in text.splitlines():
                mm = re.match(rx, line)
                if not mm:
                    continue
                groups = (None,) + mm.groups()
                for label, idx, _ in metrics:
                    label = re.sub(r"\{(\d)\}", lambda g: groups[int(g.group(1))], label)
                    values.setdefault(label, defaultdict(list))[side].append(float(groups[idx]))
    sides = [s for s in ("before", "after") if any(s in v for v in values.values())]

    def fmt(x):
        return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}" if abs(x) < 100 else f"{x:.0f}"

    print(f"# {logdir}")
    sides_txt = logdir / "sides.txt"
    if sides_txt.exists():
        print(sides_txt.read_text().rstrip())
    print("median [min-max, spread=(max-min)/median] (every round's value); ratio = after/before medians\n")
    width = max((len(k) for k in values), default=10)
    for metric, per_side in values.items():
        cells, medians = [], {}
        for side in sides:
            xs = per_side.get(side, [])
            if not xs:
                cells.append(f"{side}: -")
                continue
            med = statistics.median(xs)
            medians[side] = med
            spread = (max(xs) - min(xs)) / med * 100 if med else 0.0
            rounds = ", ".join(fmt(x) for x in xs)
            cells.append(f"{side}: {fmt(med)} [{fmt(min(xs))}-{fmt(max(xs))}, {spread:.0f}%] ({rounds})")
        ratio = ""
        if len(medians) == 2 and medians["before"]:
            ratio = f"  ratio {medians['after'] / medians['before']:.2f}"
        print(f"{metric:<{width}}  " + "  |  ".join(cells) + ratio)
    runs = logdir / "runs.txt"
    if runs.exists():
        print("\nruns:\n" + runs.read_text().rstrip())
    if failures:
        print("\nFAILED RUNS:")
        for f in failures:
            print("  " + f)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
