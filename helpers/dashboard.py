"""The live dashboard of a PPO run: its curves and latest samples, redrawn after every iteration.

``TrainingDashboard`` draws the reward model score, gold score, KL, entropy, clip fraction and
response length of a run, one panel each, with a few of the answers just sampled. To watch a
run live, pass its ``update`` as ``train_ppo``'s callback::

    board = dashboard.TrainingDashboard(total_iterations=config.n_iterations)
    history = ppo.train_ppo(..., callback=board.update, gold_fn=labelers.gold_scores)

(Name the instance something other than ``dashboard``, the module's own name, or rerunning the
cell fails.) ``load_history`` draws a finished run from its history instead, e.g. a cached run.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
from pathlib import Path

from helpers.plots import STAGE_COLORS, smooth


@dataclasses.dataclass(frozen=True)
class DashboardPanel:
    """How one metric of a training run is drawn: its stats key, title, axis label and colour."""

    key: str
    title: str
    ylabel: str
    color: str
    missing: str = "not logged in this run"  # shown in the panel while there is no value


#: The panels the dashboard knows by name (``train_ppo``'s stats keys). Any other stats key works
#: too; it gets a plain panel titled with the key.
DASHBOARD_PANELS: dict[str, DashboardPanel] = {
    panel.key: panel for panel in [
        DashboardPanel("score", "Proxy reward (RM score)", "reward model score", STAGE_COLORS["rm"]),
        DashboardPanel("gold", "Gold reward", "gold score (0-1)", STAGE_COLORS["gold"],
                       missing="no gold score: pass gold_fn to train_ppo"),
        DashboardPanel("kl", "KL(policy ‖ SFT)", "nats per response", STAGE_COLORS["ppo"]),
        DashboardPanel("entropy", "Entropy", "nats per token", STAGE_COLORS["sft"]),
        DashboardPanel("clipfrac", "Clip fraction", "share of tokens clipped", STAGE_COLORS["ppo-ptx"]),
        DashboardPanel("response_length", "Response length", "tokens", STAGE_COLORS["base"]),
    ]
}
DASHBOARD_METRICS = ("score", "gold", "kl", "entropy", "clipfrac", "response_length")
#: From this many iterations on, each panel adds a smoothed curve over the raw points.
SMOOTH_FROM = 12


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Colab, VS Code, nbclient), where outputs can be
    updated in place; False in a plain Python process or a terminal IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class TrainingDashboard:
    """Curves of a training run, redrawn in place after every iteration, and the latest samples.

    Pass ``update`` as ``train_ppo``'s callback (or the dashboard itself: it is callable)::

        board = dashboard.TrainingDashboard(total_iterations=config.n_iterations)
        history = ppo.train_ppo(..., callback=board.update, gold_fn=labelers.gold_scores)

    Each ``update(iteration, stats)`` appends the metrics found in ``stats`` (a missing one, e.g.
    "gold" without a gold_fn, leaves its panel empty with a note; from ``SMOOTH_FROM``
    iterations on, a moving average is drawn over the raw points), redraws the figure and
    replaces the dashboard's output in the notebook with the new picture and the iteration's
    sample answers (``stats["samples"]``: dicts with prompt, response, score).

    How it redraws: the figure is a plain matplotlib ``Figure`` rendered to PNG by the Agg
    canvas (no GUI backend, no pyplot figure that the inline backend would show a second time),
    embedded in one HTML output displayed with a display id; every update replaces that output
    (``update_display_data``). JupyterLab, the classic notebook, Colab, VS Code and nbclient all
    support this, with or without ipywidgets. The image carries its width and height, so the
    page keeps its layout while the new picture loads (no jumping). The output's outer element
    has the CSS class ``ppo-dashboard``. Outside a notebook nothing is displayed; the figure is
    still drawn (``figure``, ``save``).
    """

    def __init__(self, metrics=DASHBOARD_METRICS, total_iterations: int | None = None,
                 title: str = "PPO training", n_samples: int = 3, columns: int = 3,
                 display: bool | None = None, dpi: int = 100, pixel_ratio: float = 1.5):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.metrics = list(metrics)
        if not self.metrics:
            raise ValueError("the dashboard needs at least one metric")
        self.panels = [DASHBOARD_PANELS.get(m) or DashboardPanel(m, m.replace("_", " "), m, "#56B4E9")
                       for m in self.metrics]
        self.total_iterations, self.title, self.n_samples = total_iterations, title, n_samples
        self.display = _in_notebook() if display is None else bool(display)
        self.dpi, self.pixel_ratio = dpi, pixel_ratio
        self.series: dict[str, tuple[list[float], list[float]]] = {m: ([], []) for m in self.metrics}
        self.iterations = 0
        self.last_stats: dict = {}
        self.samples: list[dict] = []
        self.x_label = "iteration"
        self._handle = None

        columns = max(1, min(columns, len(self.metrics)))
        rows = -(-len(self.metrics) // columns)
        # About 1000 x 540 pixels for six panels: the width of a notebook's output area, so the
        # picture is shown close to its own size and its text stays readable.
        width, height = 3.4 * columns, 0.35 + 2.45 * rows
        self.figure = Figure(figsize=(width, height), dpi=dpi)
        FigureCanvasAgg(self.figure)  # a canvas of its own: no pyplot, no GUI, no inline auto-show
        # Fixed margins (in inches, turned into fractions) instead of a layout engine, which would
        # cost about a third of every redraw.
        self.figure.subplots_adjust(left=0.62 / width, right=1 - 0.12 / width, bottom=0.45 / height,
                                    top=1 - 0.62 / height, wspace=0.45, hspace=0.62)
        grid = self.figure.subplots(rows, columns, squeeze=False).flatten()
        for ax in grid[len(self.metrics):]:
            ax.set_visible(False)
        self.axes = dict(zip(self.metrics, grid))
        # Per panel: the raw value of every iteration, and once there are enough points a
        # moving average over them (one batch of prompts is a noisy sample; the trend is the news).
        self.lines, self.smoothed, self.notes = {}, {}, {}
        for panel in self.panels:
            ax = self.axes[panel.key]
            (self.lines[panel.key],) = ax.plot([], [], "o-", color=panel.color, markersize=3, linewidth=1.8,
                                               gid=f"dashboard-{panel.key}")
            (self.smoothed[panel.key],) = ax.plot([], [], "-", color=panel.color, linewidth=2.2,
                                                  gid=f"dashboard-{panel.key}-smoothed")
            self.notes[panel.key] = ax.text(0.5, 0.5, "waiting for the first iteration", ha="center",
                                            va="center", transform=ax.transAxes, color="#8A9099", fontsize=9)
            ax.set_title(panel.title, fontsize=_TITLE_SIZE)
            ax.set_ylabel(panel.ylabel, fontsize=_LABEL_SIZE)
            ax.set_xlabel(self.x_label, fontsize=_LABEL_SIZE)
            ax.tick_params(labelsize=_TICK_SIZE)

    # ---- feeding it ----------------------------------------------------------------------

    def update(self, iteration: int, stats: dict) -> None:
        """Add one iteration's stats (``train_ppo``'s callback signature) and redraw."""
        x = stats.get("episodes")
        self.x_label = "episodes" if x is not None else "iteration"
        x = float(x if x is not None else iteration + 1)
        for metric in self.metrics:
            value = stats.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                xs, ys = self.series[metric]
                xs.append(x)
                ys.append(float(value))
        self.iterations += 1
        self.last_stats = {k: v for k, v in stats.items() if k != "samples"}
        self.last_stats.setdefault("iteration", iteration + 1)
        self.samples = list(stats.get("samples") or [])[: self.n_samples]
        self.redraw()
        self.show()

    __call__ = update

    def load_history(self, history: dict, show: bool = True) -> "TrainingDashboard":
        """Fill the dashboard from a finished run's history (dict of lists, as ``train_ppo``
        returns and a stage saves), e.g. to look at a cached run; returns the dashboard."""
        n = max((len(history.get(m, [])) for m in self.metrics), default=0)
        episodes = history.get("episodes")
        for i in range(n):
            for metric in self.metrics:
                values = history.get(metric, [])
                if i < len(values) and isinstance(values[i], (int, float)):
                    xs, ys = self.series[metric]
                    xs.append(float(episodes[i]) if episodes and i < len(episodes) else float(i + 1))
                    ys.append(float(values[i]))
        self.x_label = "episodes" if episodes else "iteration"
        self.iterations = n
        self.last_stats = {k: v[n - 1] for k, v in history.items() if isinstance(v, list) and len(v) == n and n}
        self.last_stats["iteration"] = n
        self.redraw()
        if show:
            self.show()
        return self

    # ---- drawing -------------------------------------------------------------------------

    def redraw(self) -> None:
        for panel in self.panels:
            ax, line, note = self.axes[panel.key], self.lines[panel.key], self.notes[panel.key]
            xs, ys = self.series[panel.key]
            line.set_data(xs, ys)
            line.set_marker("o" if len(xs) <= 60 else "")  # markers only while they can be told apart
            if len(xs) >= SMOOTH_FROM:
                weight = min(0.9, 1 - 8 / len(xs))  # remembers about the last eighth of the run
                self.smoothed[panel.key].set_data(xs, smooth(ys, weight))
                line.set(alpha=0.35, linewidth=1.0, markersize=2)
            else:
                self.smoothed[panel.key].set_data([], [])
                line.set(alpha=1.0, linewidth=1.8, markersize=3)
            ax.set_xlabel(self.x_label, fontsize=_LABEL_SIZE)
            ax.tick_params(labelbottom=bool(xs), labelleft=bool(xs))  # no made-up axis on an empty panel
            if xs:
                note.set_text("")
                ax.set_title(f"{panel.title}: {_short(ys[-1])}", fontsize=_TITLE_SIZE)
                ax.set_autoscale_on(True)
                ax.relim()
                ax.autoscale_view()
                if len(xs) == 1:  # one point: give the x axis some width around it
                    ax.set_xlim(xs[0] - 1, xs[0] + 1)  # (turns autoscaling off until the next redraw)
            else:
                ax.set_title(panel.title, fontsize=_TITLE_SIZE)
                note.set_text(panel.missing if self.iterations else "waiting for the first iteration")
        self.figure.suptitle(self.status(), fontsize=_LABEL_SIZE)

    def status(self) -> str:
        """One line: where the run is and its latest numbers."""
        if not self.iterations:
            return f"{self.title}: waiting for the first iteration"
        s = self.last_stats
        of = f" / {self.total_iterations}" if self.total_iterations else ""
        parts = [f"{self.title}: iteration {s.get('iteration', self.iterations)}{of}"]
        if "episodes" in s:
            parts.append(f"{s['episodes']:,} episodes")
        for key, label in (("score", "RM score"), ("gold", "gold"), ("kl", "KL")):
            if isinstance(s.get(key), (int, float)):
                parts.append(f"{label} {s[key]:.3f}")
        if isinstance(s.get("beta"), (int, float)):
            parts.append(f"β {s['beta']:.3g}")
        return " · ".join(parts)

    def png(self) -> bytes:
        buffer = io.BytesIO()
        # A fast, light compression: the picture is sent to the browser after every iteration.
        self.figure.savefig(buffer, format="png", dpi=self.dpi * self.pixel_ratio, facecolor="white",
                            pil_kwargs={"compress_level": 1})
        return buffer.getvalue()

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.png())
        return path

    def samples_html(self) -> str:
        if not self.samples:
            return ""
        rows = []
        for sample in self.samples:
            response = html.escape(str(sample.get("response", ""))) or "<i>(empty)</i>"
            rows.append(f"<tr><td style='{_CELL}'>{html.escape(str(sample.get('prompt', '')))}</td>"
                        f"<td style='{_CELL}'><pre style='{_PRE}'>{response}</pre></td>"
                        f"<td style='{_CELL}; text-align: right'>{_number(sample.get('score'))}</td></tr>")
        return ("<table class='ppo-dashboard-samples' style='border-collapse: collapse; margin-top: 6px; "
                f"font-size: 0.9em; width: 100%; max-width: {round(self.figure.get_figwidth() * self.dpi)}px'>"
                f"<caption style='text-align: left; font-weight: bold; padding: 2px 0'>Answers sampled in iteration "
                f"{self.last_stats.get('iteration', self.iterations)}</caption>"
                f"<tr><th style='{_CELL}'>prompt</th><th style='{_CELL}'>response</th>"
                f"<th style='{_CELL}'>RM score</th></tr>{''.join(rows)}</table>")

    def html(self) -> str:
        """The dashboard as one HTML fragment: the figure (an embedded PNG) and the samples."""
        width, height = (round(v * self.dpi) for v in self.figure.get_size_inches())
        image = base64.b64encode(self.png()).decode("ascii")
        return (f"<div class='ppo-dashboard' data-iteration='{self.iterations}'>"
                f"<img class='ppo-dashboard-figure' alt='{html.escape(self.status())}' width='{width}' "
                f"height='{height}' style='max-width: 100%; height: auto' src='data:image/png;base64,{image}'/>"
                f"{self.samples_html()}</div>")

    # ---- display -------------------------------------------------------------------------

    def show(self) -> None:
        """Display the dashboard (the first time) or replace its output in place."""
        if not self.display:
            return
        from IPython.display import HTML, display

        content = HTML(self.html())
        if self._handle is None:
            self._handle = display(content, display_id=True)
        else:
            self._handle.update(content)

    def _ipython_display_(self) -> None:
        """The dashboard as a cell's last expression: shown there, and updated there from now on."""
        from IPython.display import HTML, display

        self._handle = display(HTML(self.html()), display_id=True)


_TITLE_SIZE, _LABEL_SIZE, _TICK_SIZE = 10.5, 9.5, 8.5  # points; the panels are small
_CELL = "border: 1px solid #d0d7de; padding: 3px 6px; vertical-align: top; text-align: left"
_PRE = "white-space: pre-wrap; word-break: break-word; margin: 0; font-size: 0.95em"


def _short(value: float) -> str:
    """A latest value for a panel title: 3 significant digits, no exponent for large numbers."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _number(value) -> str:
    return f"{value:+.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
