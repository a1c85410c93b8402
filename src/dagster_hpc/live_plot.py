"""A small PNG of a job's memory and CPU over time, as Markdown metadata Dagster's UI shows.

matplotlib is optional (``pip install dagster-hpc[plot]``): without it the metadata says how to
get the plot, and the numbers (``slurm/live_series``) are there either way.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

# 6.4 x 2.4 inches at 80 dpi: 512 x 192 pixels, 10-30 kB, readable in the metadata panel.
PLOT_SIZE_IN = (6.4, 2.4)
PLOT_DPI = 80


def render_png(job_id: str, points: Sequence[Any]) -> bytes | None:
    """PNG bytes (RSS in MB on the left axis, CPU % of one core on the right), None without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=PLOT_SIZE_IN, dpi=PLOT_DPI)
    ax = fig.add_subplot(1, 1, 1)
    t = [p.t_s for p in points]
    ax.plot(t, [p.rss_mb for p in points], color="tab:blue", label="RSS (MB)")
    ax.set_xlabel("seconds since first sample")
    ax.set_ylabel("RSS (MB)", color="tab:blue")
    ax.set_ylim(bottom=0)
    cpu = [(p.t_s, p.cpu_pct) for p in points if p.cpu_pct is not None]
    ax2 = ax.twinx()
    if cpu:
        ax2.plot([c[0] for c in cpu], [c[1] for c in cpu], color="tab:orange", label="CPU (%)")
    ax2.set_ylabel("CPU (% of a core)", color="tab:orange")
    ax2.set_ylim(bottom=0)
    ax.set_title(f"Slurm job {job_id}: memory and CPU", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_markdown(job_id: str, points: Sequence[Any]) -> str:
    png = render_png(job_id, points)
    if png is None:
        return "(install `dagster-hpc[plot]` (matplotlib) to see memory and CPU over time here)"
    data = base64.b64encode(png).decode()
    return f"![memory and CPU of Slurm job {job_id}](data:image/png;base64,{data})"
