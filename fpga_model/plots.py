"""Figures: the unit timeline of a core trace, Table 5 paper vs model, and the roofline.
Each function draws on a Matplotlib Axes and returns it (callers pick the backend)."""
import numpy as np

from .isa import UNITS

UNIT_COLOURS = {"rowwise": "tab:blue", "rms": "tab:orange", "loadstore": "tab:green", "tmatmul": "tab:red"}


def timeline(trace, ax, clock_mhz=None, title="unit timeline"):
    """One row per functional unit (+ the PC's stalls), bars from issue to completion."""
    scale = 1.0 if clock_mhz is None else 1.0 / (clock_mhz * 1e3)         # cycles or ms
    rows = list(UNITS) + ["PC stall"]
    for y, unit in enumerate(rows):
        if unit == "PC stall":
            spans = [(e.ready * scale, e.stall * scale) for e in trace.events if e.stall]
        else:
            spans = [(e.issue * scale, (e.end - e.issue) * scale) for e in trace.events if e.unit == unit]
        ax.broken_barh(spans, (y - 0.35, 0.7), color=UNIT_COLOURS.get(unit, "0.6"))
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("ms" if clock_mhz else "cycles")
    ax.set_title(title)
    return ax


def table5_bars(rows, ax, burst=False):
    """rows from paper.table5_rows(): paper vs model runtime per d, error printed above the bars."""
    key_p, key_m, key_e = ("paper_burst_ms", "model_burst_ms", "burst_err") if burst else ("paper_ms", "model_ms", "err")
    x = np.arange(len(rows))
    paper = [r[key_p] for r in rows]
    model = [r[key_m] for r in rows]
    ax.bar(x - 0.2, paper, 0.4, label="paper", color="0.6")
    ax.bar(x + 0.2, model, 0.4, label="model", color="tab:red")
    for xi, r in zip(x, rows):
        ax.text(xi + 0.2, r[key_m], f"{r[key_e]:+.1f}%", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"d={r['d']}\n{r['clock_mhz']} MHz" for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("ms per block")
    ax.set_title("Table 5, x64 burst projection" if burst else "Table 5, measured (8-bit accesses)")
    ax.legend()
    return ax


def roofline(rows, ax, title="TMATMUL roofs per core vs DRAM access width"):
    """rows from sweep.evaluate() varying the access width: the latency, compute and channel roofs
    (ternary adds/s per core) and the achieved rate; the design runs on the lowest roof."""
    rows = sorted(rows, key=lambda r: r["ddr_bits"])
    x = np.array([r["ddr_bits"] for r in rows])
    for key, style in (("latency", "--"), ("compute", ":"), ("channel", "-")):
        ax.plot(x, [r[key] for r in rows], style, label=f"{key} roof")
    ax.plot(x, [r["achieved"] for r in rows], "o", color="k", label="model (achieved)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("useful bits per DRAM access (8 = measured, 512 = paper's projection)")
    ax.set_ylabel("ternary adds / s per core")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax
