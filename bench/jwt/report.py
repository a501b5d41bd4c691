"""Statistics, tables, the docs section and the plot of a JWT key-ring run.

Figures per configuration: the median of every timed call of the run, the spread of its per-round medians,
and ratios taken round by round (a 5-key series over the 1-key series of the same round, algorithm and path,
measured a second or two apart) and then their median over the rounds, with the range of the per-round ratios.
"""

from __future__ import annotations

import gzip
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "bench-jwt"
X = "\u00d7"
ALGORITHMS = ("HS256", "EdDSA")
PATHS = ("pyjwt", "backend", "access_decode")
PATH_TITLES = {
    "pyjwt": "`jwt.decode`, key in hand",
    "backend": "`KeyedTokenBackend.decode`",
    "access_decode": "`access_decode`",
}
CONFIGS = ((1, "active"), (5, "active"), (5, "oldest"))  # (keys in the ring, the key that signed the token)
CONFIG_TITLES = {
    (1, "active"): "1 key",
    (5, "active"): "5 keys, newest (ACTIVE)",
    (5, "oldest"): "5 keys, oldest (PREVIOUS)",
}


@dataclass
class Run:
    path: Path
    samples: dict[str, list[list[int]]]  # series -> per round, timings in ns
    meta: dict[str, Any]


@dataclass(frozen=True)
class Stat:
    n: int
    median: float  # of every call, in the series' unit
    round_medians: list[float]


def load(path: Path) -> Run:
    with gzip.open(path / "samples.json.gz", "rt") as f:
        samples = json.load(f)
    return Run(path, samples, json.loads((path / "meta.json").read_text()))


def verify_key(algorithm: str, keys: int, signer: str, path: str) -> str:
    return f"verify/{algorithm}/{keys}/{signer}/{path}"


def stat(run: Run, series: str, unit: float) -> Stat:
    rounds = run.samples[series]
    every = [t / unit for timings in rounds for t in timings]
    return Stat(len(every), statistics.median(every), [statistics.median(timings) / unit for timings in rounds])


def ratios(run: Run, numerator: str, denominator: str) -> list[float]:
    """Per round: the median of ``numerator`` over the median of ``denominator``."""
    return [
        statistics.median(a) / statistics.median(b)
        for a, b in zip(run.samples[numerator], run.samples[denominator], strict=True)
    ]


def controlled(run: Run, algorithm: str, signer: str, path: str) -> list[float]:
    """Per round: (5 keys ÷ 1 key on ``path``) ÷ (5 keys ÷ 1 key with PyJWT alone, key in hand).

    PyJWT alone runs interleaved with the path in the same blocks, so the block-to-block drift of a shared
    machine cancels; what is left is what the ring's size adds to the path.
    """
    raw = ratios(run, verify_key(algorithm, 5, signer, path), verify_key(algorithm, 1, "active", path))
    floor = ratios(run, verify_key(algorithm, 5, signer, "pyjwt"), verify_key(algorithm, 1, "active", "pyjwt"))
    return [a / b for a, b in zip(raw, floor, strict=True)]


def ratio_cell(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.2f}-{max(values):.2f})"


def us(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def verification_rows(run: Run) -> list[list[str]]:
    rows = []
    for algorithm in ALGORITHMS:
        for path in PATHS:
            for keys, signer in CONFIGS:
                series = verify_key(algorithm, keys, signer, path)
                s = stat(run, series, 1000)
                base = verify_key(algorithm, 1, "active", path)
                backend = verify_key(algorithm, keys, signer, "backend")
                control = "1" if keys == 1 else "-"
                if keys > 1 and path != "pyjwt":
                    control = ratio_cell(controlled(run, algorithm, signer, path))
                rows.append(
                    [
                        f"**{algorithm}**" if (path, keys, signer) == (PATHS[0], *CONFIGS[0]) else "",
                        PATH_TITLES[path] if (keys, signer) == CONFIGS[0] else "",
                        CONFIG_TITLES[(keys, signer)],
                        us(s.median),
                        f"{us(min(s.round_medians))}-{us(max(s.round_medians))}",
                        "1" if series == base else ratio_cell(ratios(run, series, base)),
                        control,
                        "1" if series == backend else ratio_cell(ratios(run, series, backend)),
                    ]
                )
    return rows


VERIFY_HEADERS = [
    "token",
    "path",
    "ring (token signed by)",
    "median µs",
    "round medians µs",
    "÷ 1 key, same path",
    "÷ 1 key, over the control",
    "÷ backend decode",
]


def refresh_rows(run: Run) -> list[list[str]]:
    rows = []
    for algorithm in ALGORITHMS:
        for keys in (1, 5):
            name = f"{algorithm}/{keys}"
            entries = run.meta["rings"][name]["entries"]
            cells = [f"**{algorithm}**" if keys == 1 else "", f"{keys} key{'s' if keys > 1 else ''}", str(len(entries))]
            for kind in ("refresh", "refresh-cold"):
                s = stat(run, f"{kind}/{name}", 1_000_000)
                ratio = "1" if keys == 1 else ratio_cell(ratios(run, f"{kind}/{name}", f"{kind}/{algorithm}/1"))
                cells += [f"{s.median:.3f}", f"{min(s.round_medians):.3f}-{max(s.round_medians):.3f}", ratio]
            rows.append(cells)
    return rows


REFRESH_HEADERS = [
    "token algorithm",
    "database keys",
    "rows read (= by_kid entries)",
    "steady refresh ms (median)",
    "round medians ms",
    "÷ 1 key",
    "cold refresh ms (median)",
    "round medians ms",
    "÷ 1 key",
]


def _markdown_table(headers: list[str], rows: list[list[str]], left: int) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * left + ["---:"] * (len(headers) - left)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _text_table(headers: list[str], rows: list[list[str]]) -> str:
    body = [headers] + [[cell.replace("**", "") for cell in row] for row in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in body)


def summary(run: Run) -> dict[str, Any]:
    """The headline figures: per-round ratio medians 5 keys ÷ 1 key, and the refresh per second of a worker."""
    result: dict[str, Any] = {}
    for algorithm in ALGORITHMS:
        for path in PATHS:
            base = verify_key(algorithm, 1, "active", path)
            for signer in ("active", "oldest"):
                values = ratios(run, verify_key(algorithm, 5, signer, path), base)
                result[f"{algorithm}/{path}/5-{signer}÷1"] = statistics.median(values)
                if path != "pyjwt":
                    result[f"{algorithm}/{path}/5-{signer}÷1÷control"] = statistics.median(
                        controlled(run, algorithm, signer, path)
                    )
            result[f"{algorithm}/{path}/oldest÷newest"] = statistics.median(
                ratios(run, verify_key(algorithm, 5, "oldest", path), verify_key(algorithm, 5, "active", path))
            )
        steady = stat(run, f"refresh/{algorithm}/5", 1_000_000).median
        result[f"{algorithm}/refresh-5-ms"] = steady
        result[f"{algorithm}/refresh÷1"] = statistics.median(
            ratios(run, f"refresh/{algorithm}/5", f"refresh/{algorithm}/1")
        )
    return result


def machine_line(run: Run) -> str:
    meta = run.meta
    m = meta["machine"]
    return (
        f"Run of {meta['created'][:10]} (commit `{meta['git']['commit'][:7]}`"
        + (" plus uncommitted changes" if meta["git"]["changed_files"] else "")
        + f"): {m['cpus']} cores ({m['cpu_model'] or 'unknown CPU'}), shared; Python {m['python']}, PyJWT "
        f"{m['pyjwt']}, cryptography {m['cryptography']}, Django {m['django']}; load average "
        f"{meta['loadavg']['before'][0]} before, {meta['loadavg']['after'][0]} after; {meta['args']['rounds']} rounds "
        f"x {meta['args']['calls']} timed calls per token and path (in {meta['args'].get('blocks', 1)} blocks "
        f"per ring), {meta['args']['refreshes']} steady and "
        f"{meta['args']['cold']} cold refreshes per ring; measuring took {meta['measured_seconds']:.0f} s."
    )


def text_table(run: Run) -> str:
    s = summary(run)
    lines = [
        "Verification, µs per call",
        _text_table(VERIFY_HEADERS, verification_rows(run)),
        "",
        "Ring refresh, ms per refresh",
        _text_table(REFRESH_HEADERS, refresh_rows(run)),
        "",
        machine_line(run),
        "per-round ratio medians: " + ", ".join(f"{k} {v:.3f}" for k, v in s.items()),
    ]
    return "\n".join(lines)


def text_report(run: Run) -> str:
    return text_table(run)


def section(run: Run) -> str:
    """The run's part of docs/benchmarks.md (the description and the reading around it are written by hand)."""
    s = summary(run)
    calls = run.meta["args"]["rounds"] * run.meta["args"]["calls"]
    oldest = {a: s[f"{a}/backend/oldest÷newest"] for a in ALGORITHMS}
    pyjwt = {a: s[f"{a}/pyjwt/oldest÷newest"] for a in ALGORITHMS}
    controlled_range = [s[k] for k in s if k.endswith("÷1÷control")]
    lines = [
        "### Results",
        "",
        machine_line(run),
        "",
        f"Command: `{run.meta.get('command', 'python -m bench.jwt --publish')}`. Everything runs in the "
        "benchmark's one process (no server, no client); the stack's PostgreSQL shares the cores.",
        "",
        f"**5 keys ÷ 1 key, over the control** (per-round ratio medians, every algorithm, path and signer): "
        f"{min(controlled_range):.3f} to {max(controlled_range):.3f}.",
        "",
        f"Verification, µs per call (median of {calls:,} calls per row):",
        "",
        _markdown_table(VERIFY_HEADERS, verification_rows(run), 3),
        "",
        "In the 5-key rings, a token of the oldest key against one of the newest (both measured interleaved call "
        f"by call): {oldest['HS256']:.3f}{X} (HS256) and {oldest['EdDSA']:.3f}{X} (EdDSA) for the backend, and "
        f"{pyjwt['HS256']:.3f}{X} (HS256) and {pyjwt['EdDSA']:.3f}{X} (EdDSA) for PyJWT alone with the key in hand.",
        "",
        "Ring refresh, ms per refresh:",
        "",
        _markdown_table(REFRESH_HEADERS, refresh_rows(run), 2),
        "",
        "![Per round: backend decode µs, 5 keys ÷ 1 key with the PyJWT-alone control, ring refresh ms]"
        "(bench/jwt_keys.png)",
        "",
        "Left: median per round of `KeyedTokenBackend.decode` (HS256 solid, EdDSA dashed). Middle: the per-round "
        "5 ÷ 1 ratios, with PyJWT alone (grey) as the control. Right: median steady refresh per round.",
        "",
    ]
    return "\n".join(lines)


def plot(run: Run, path: Path) -> Path:
    """Per round: backend decode µs, the 5-key ÷ 1-key ratios (with PyJWT alone as the noise control), refresh."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colors = {(1, "active"): "#7f8c8d", (5, "active"): "#c0392b", (5, "oldest"): "#2980b9"}
    labels = {(1, "active"): "1 key", (5, "active"): "5 keys, newest", (5, "oldest"): "5 keys, oldest"}
    styles = {"HS256": "-", "EdDSA": "--"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.1))
    ax = axes[0]
    for algorithm in ALGORITHMS:
        for config in CONFIGS:
            s = stat(run, verify_key(algorithm, *config, "backend"), 1000)
            rounds = range(1, len(s.round_medians) + 1)
            ax.plot(
                rounds,
                s.round_medians,
                styles[algorithm],
                marker="o",
                markersize=3,
                color=colors[config],
                label=f"{algorithm}, {labels[config]}",
            )
    ax.set_title("KeyedTokenBackend.decode: median per round", fontsize=9)
    ax.set_ylabel("µs per verification")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="lower right", ncol=2)

    ax = axes[1]
    shown: list[float] = []
    for algorithm in ALGORITHMS:
        for signer in ("active", "oldest"):
            for kind in ("backend", "pyjwt"):
                values = ratios(run, verify_key(algorithm, 5, signer, kind), verify_key(algorithm, 1, "active", kind))
                if kind == "pyjwt" and signer == "oldest":
                    continue  # the key is in hand: which one signed does not matter
                shown += values
                ax.plot(
                    range(1, len(values) + 1),
                    values,
                    styles[algorithm],
                    marker="o" if kind == "backend" else "x",
                    markersize=3,
                    color=colors[(5, signer)] if kind == "backend" else "#95a5a6",
                    label=f"{algorithm}, "
                    + (f"{labels[(5, signer)]} ÷ 1 key" if kind == "backend" else "PyJWT alone, 5 ÷ 1 (control)"),
                )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_title("5 keys ÷ 1 key, medians of the same round", fontsize=9)
    ax.set_ylabel("ratio")
    ax.set_ylim(min(0.8, min(shown) - 0.02), max(1.2, max(shown) + 0.02))
    ax.legend(fontsize=6.5, loc="upper right", ncol=2)

    ax = axes[2]
    for algorithm, color in zip(ALGORITHMS, ("#8e44ad", "#27ae60"), strict=True):
        for keys, style in ((1, ":"), (5, "-")):
            s = stat(run, f"refresh/{algorithm}/{keys}", 1_000_000)
            ax.plot(
                range(1, len(s.round_medians) + 1),
                s.round_medians,
                style,
                marker="o",
                markersize=3,
                color=color,
                label=f"{algorithm} ring, {keys} key{'s' if keys > 1 else ''}",
            )
    ax.set_title("ring refresh (1 query + build), median per round", fontsize=9)
    ax.set_ylabel("ms per refresh")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="lower right")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
