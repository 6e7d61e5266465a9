"""Draw docs/performance.png from the JSON that ``compare.py`` saved.

Run with the benchmark environment's Python (it has matplotlib):
``python bench/plot.py docs/performance.json docs/performance.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {
    "inprocess": "SquidMesh\nin-process",
    "taskiq-inline": "SquidMesh\nTaskiq, inline",
    "taskiq-plain": "SquidMesh\nTaskiq, no inline",
    "dbos": "DBOS 3.4.0",
}


def main(source: Path, target: Path) -> None:
    results = json.loads(source.read_text())
    engines = results["engines"]
    names = [n for n in LABELS if n in engines]
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(12, 4.8))
    width = 0.25
    for i, pct in enumerate(("p50", "p95", "p99")):
        values = [engines[n]["serial"]["steps_10"][pct] for n in names]
        lat.bar([x + (i - 1) * width for x in range(len(names))], values, width, label=pct)
    lat.set_xticks(range(len(names)), [LABELS[n] for n in names], fontsize=8)
    lat.set_ylabel("ms")
    lat.set_title("Serial latency of a 10-step workflow (lower is better)")
    lat.legend()
    levels = [t["concurrency"] for t in engines[names[0]]["throughput"]]
    for i, level in enumerate(levels):
        values = [engines[n]["throughput"][i]["steps_per_s"] for n in names]
        offset = (i - (len(levels) - 1) / 2) * width
        thr.bar(
            [x + offset for x in range(len(names))], values, width, label=f"concurrency {level}"
        )
    thr.set_xticks(range(len(names)), [LABELS[n] for n in names], fontsize=8)
    thr.set_ylabel("steps per second")
    thr.set_title("Throughput, 10-step workflows (higher is better)")
    thr.legend()
    machine = results["machine"]
    fig.suptitle(
        f"{machine['machine']}, {machine['cores']} cores, PostgreSQL "
        f"{machine['postgres']['server_version'].split()[0]}, one run ({machine['date']})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
