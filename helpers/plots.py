"""The course's figure style and its figures (matplotlib only).

Every figure function takes an optional `ax` and returns the Axes it drew on, so a notebook can
place figures side by side; `ax.figure` is the Figure. Call `use_course_style()` once per notebook.

One colour per pipeline stage, used everywhere (curves, bars, the three-step diagram):
base, sft, rm, ppo, ppo-ptx (and dpo for the comparison notebook).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
STAGE_COLORS: dict[str, str] = {
    "base": "#6C7A89",  # slate: the model before any alignment
    "sft": "#0072B2",  # blue
    "rm": "#E69F00",  # orange
    "ppo": "#009E73",  # green
    "ppo-ptx": "#CC79A7",  # purple
    "dpo": "#D55E00",  # vermilion
    "gold": "#222222",  # the gold labeler / reference lines
}
_OTHER_COLORS = ["#56B4E9", "#F0E442", "#999999", "#882255", "#44AA99"]
GREY = "#B8BEC6"  # a step of the diagram that is not the current one
_CYCLE_ORDER = ("sft", "rm", "ppo", "ppo-ptx", "dpo", "base")


def stage_color(name: str, index: int = 0) -> str:
    """The colour of a pipeline stage ("sft", "PPO-ptx", "ppo_ptx" all work); others cycle."""
    key = name.lower().replace("_", "-").replace(" ", "-")
    return STAGE_COLORS.get(key, _OTHER_COLORS[index % len(_OTHER_COLORS)])


def use_course_style() -> None:
    """Readable sizes, the stage palette as the colour cycle, a light grid, no top/right spines."""
    matplotlib.rcParams.update({
        "figure.figsize": (7.5, 4.2),
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "savefig.bbox": "tight",
        "font.size": 11,
        "axes.titlesize": 13,
        "axes.titleweight": "bold",
        "axes.labelsize": 11,
        "xtick.labelsize": 10,
        "ytick.labelsize": 10,
        "legend.fontsize": 10,
        "legend.frameon": False,
        "axes.prop_cycle": matplotlib.cycler(color=[STAGE_COLORS[k] for k in _CYCLE_ORDER]),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.color": "#E3E6EA",
        "grid.linewidth": 0.8,
        "axes.axisbelow": True,
        "lines.linewidth": 2.0,
    })


def _new_ax(ax, figsize=None):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


# --- The three steps of InstructGPT ------------------------------------------------------------

# (title, colour, boxes from top to bottom, what the step produces); the wording is the course's.
_STEPS = [
    ("Supervised fine-tuning", "sft", [
        "Sample a prompt from the prompt set",
        "A labeler writes the answer they want",
        "Fine-tune the base model on these demonstrations",
    ], "SFT model"),
    ("Reward model", "rm", [
        "Sample a prompt and K answers from the SFT model",
        "A labeler ranks the K answers, best to worst",
        "Train a reward model on all K(K-1)/2 pairs of each ranking",
    ], "Reward model"),
    ("Reinforcement learning (PPO)", "ppo", [
        "Sample a new prompt",
        "The policy (a copy of SFT) writes an answer",
        "Reward = RM score\n − β·KL(policy ‖ SFT)",
        "PPO updates the policy",
    ], "Aligned policy"),
]


def _tint(hex_color: str, amount: float) -> tuple[float, float, float]:
    """Mix a colour with white: amount 0 -> the colour, 1 -> white."""
    r, g, b = matplotlib.colors.to_rgb(hex_color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def _balanced_fill(text: str, width: int) -> str:
    """Wrap to at most `width` characters with lines of similar length (no one-word last line)."""
    n_lines = len(textwrap.wrap(text, width))
    while width > 1 and len(textwrap.wrap(text, width - 1)) == n_lines:
        width -= 1
    return textwrap.fill(text, width)


def _box(ax, x, y, w, h, text, face, edge, gid, size=10.5, weight="normal", color="#1F2328", wrap=26):
    patch = FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.12", facecolor=face,
                           edgecolor=edge, linewidth=1.4, gid=gid)
    ax.add_patch(patch)
    wrapped = "\n".join(_balanced_fill(line, wrap) for line in text.split("\n"))  # keep explicit breaks
    ax.text(x + w / 2, y + h / 2, wrapped, ha="center", va="center", fontsize=size,
            fontweight=weight, color=color, linespacing=1.3)
    return patch


def _arrow(ax, start, end, color, gid=None):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, linewidth=1.6,
                                 color=color, shrinkA=0, shrinkB=0, gid=gid))


def three_step_diagram(highlight: int | None = None, ax=None):
    """The three InstructGPT steps as boxes and arrows; step `highlight` (1-3) in colour, others grey.

    highlight=None draws every step in its colour; highlight=0 greys all three (the base model,
    before step 1). Drawn in inch-sized data units on a 10 x 5.9
    figure (a notebook's width), so the text stays readable.
    """
    if highlight not in (None, 0, 1, 2, 3):
        raise ValueError(f"highlight must be 0, 1, 2, 3 or None, got {highlight!r}")
    if ax is None:
        fig = plt.figure(figsize=(10, 5.9))
        ax = fig.add_axes([0, 0, 1, 1])
    width, gap, top = 3.0, 0.5, 5.8
    header_h, box_h, arrow_h, product_h = 0.8, 0.62, 0.26, 0.52
    n_rows = max(len(boxes) for _, _, boxes, _ in _STEPS)
    first_box_top = top - header_h - 0.22
    product_y = first_box_top - n_rows * (box_h + arrow_h) - product_h  # one row for the three products

    def colours(step):
        lit = highlight is None or highlight == step
        return (STAGE_COLORS[_STEPS[step - 1][1]] if lit else GREY), ("#1F2328" if lit else "#8A9099")

    for step, (title, stage, boxes, product) in enumerate(_STEPS, start=1):
        main, ink = colours(step)
        x = (step - 1) * (width + gap)
        _box(ax, x, top - header_h, width, header_h, f"Step {step}\n{title}", main, main,
             f"step{step}-header", size=11.5, weight="bold", color="white", wrap=60)
        y = first_box_top
        for i, text in enumerate(boxes):
            _box(ax, x + 0.1, y - box_h, width - 0.2, box_h, text, _tint(main, 0.86), main,
                 f"step{step}-box{i}", size=10, color=ink, wrap=32)
            bottom = y - box_h
            next_top = bottom - arrow_h if i < len(boxes) - 1 else product_y + product_h
            _arrow(ax, (x + width / 2, bottom), (x + width / 2, next_top), main)
            y = bottom - arrow_h
        _box(ax, x + 0.45, product_y, width - 0.9, product_h, product, main, main, f"step{step}-product",
             size=11, weight="bold", color="white")

    # How the products feed each other: SFT initialises the RM; the RM scores the policy's answers;
    # SFT is also the policy's starting point and its KL anchor.
    mid = product_y + product_h / 2
    notes = [(1, 2, "initialises"), (2, 3, "gives the reward")]
    for a, b, note in notes:
        main, ink = colours(b)
        x_from, x_to = a * width + (a - 1) * gap - 0.45, (b - 1) * (width + gap) + 0.45
        _arrow(ax, (x_from, mid), (x_to, mid), main, gid=f"step{b}-input")
        ax.text((x_from + x_to) / 2, mid + 0.07, note, ha="center", va="bottom", fontsize=9,
                style="italic", color=ink)
    main, ink = colours(3)
    start, end = (width / 2, product_y), (2 * (width + gap) + width / 2, product_y)
    ax.add_patch(FancyArrowPatch(start, end, connectionstyle="arc3,rad=0.12", arrowstyle="-|>",
                                 mutation_scale=14, linewidth=1.4, linestyle=(0, (4, 3)), color=main,
                                 gid="step3-sft-anchor"))
    ax.text(width + gap + width / 2, product_y - 0.62, "starting point and KL anchor of the policy",
            ha="center", va="center", fontsize=9, style="italic", color=ink)

    ax.set_xlim(-0.05, 3 * width + 2 * gap + 0.05)
    ax.set_ylim(product_y - 0.85, top + 0.05)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


def save_three_step_diagram(path: str | Path, highlight: int | None = None) -> Path:
    """Render the diagram to a PNG (the README's figure: notebooks/figures/three_steps.png)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context({"axes.grid": False}):
        ax = three_step_diagram(highlight)
        ax.figure.savefig(path, dpi=110, bbox_inches="tight", facecolor="white")
    plt.close(ax.figure)
    return path


# --- Training curves ---------------------------------------------------------------------------


def smooth(values: Sequence[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction, so the first points are not pulled to 0."""
    out, average = [], 0.0
    for i, v in enumerate(values, start=1):
        average = weight * average + (1 - weight) * v
        out.append(average / (1 - weight**i))
    return out


def loss_curve(history: dict, ax=None, title: str = "Training loss", color: str | None = None,
               smoothing: float | None = None, label: str = "train"):
    """Train loss per step (faint raw, solid smoothed) and held-out loss points.

    history: {"step": [...], "train_loss": [...], "eval_step": [...], "eval_loss": [...]} (or
    "heldout_loss", as ``helpers.pretrain.pretrain`` names it); the eval keys are optional. smoothing: EMA weight, by default larger for longer runs.
    """
    ax = _new_ax(ax)
    color = color or STAGE_COLORS["sft"]
    steps, losses = list(history.get("step", [])), list(history.get("train_loss", []))
    if len(steps) != len(losses):
        raise ValueError(f"{len(steps)} steps but {len(losses)} train losses")
    if losses:
        if smoothing is None:
            smoothing = min(0.95, max(0.0, 1 - 10 / len(losses)))  # about len/10 points of memory
        ax.plot(steps, losses, color=color, alpha=0.25, linewidth=1.0, gid="train-raw")
        ax.plot(steps, smooth(losses, smoothing), color=color, label=label, gid="train-smoothed")
    eval_steps = list(history.get("eval_step", []))
    eval_losses = list(history.get("eval_loss", history.get("heldout_loss", [])))
    if eval_losses:
        ax.plot(eval_steps, eval_losses, "o--", color="#222222", markersize=5, linewidth=1.2,
                label="held-out", gid="eval")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if losses or eval_losses:
        ax.legend()
    return ax


# --- Scores by category ------------------------------------------------------------------------


def _label_bars(ax, bars, values, fmt, bounds=None):
    """Write each value above its bar (above its error bar, if it has one)."""
    bounds = bounds or [None] * len(values)
    for bar, value, bound in zip(bars, values, bounds):
        if value == value:  # not NaN
            top = max(value, bound[1]) if bound is not None else value
            ax.annotate(fmt.format(value), (bar.get_x() + bar.get_width() / 2, top),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=9)


def bar_by_category(values: dict[str, float], ax=None, title: str | None = None, ylabel: str = "score",
                    color: str | None = None, intervals: dict[str, tuple[float, float]] | None = None,
                    ylim: tuple[float, float] | None = None, fmt: str = "{:.2f}"):
    """One bar per category (e.g. mean gold score per task family); optional (low, high) intervals."""
    ax = _new_ax(ax, figsize=(max(5.0, 0.7 * len(values) + 2), 4.0))
    names = list(values)
    heights = [values[n] for n in names]
    bars = ax.bar(range(len(names)), heights, color=color or STAGE_COLORS["sft"], width=0.7)
    bounds = [intervals.get(n) for n in names] if intervals else None
    if bounds:
        _error_bars(ax, [b.get_x() + b.get_width() / 2 for b in bars], heights, bounds)
    _label_bars(ax, bars, heights, fmt, bounds)
    _category_axis(ax, names, title, ylabel, ylim)
    return ax


def grouped_bars(values: dict[str, dict[str, float]], ax=None, title: str | None = None, ylabel: str = "score",
                 intervals: dict[str, dict[str, tuple[float, float]]] | None = None,
                 ylim: tuple[float, float] | None = None, fmt: str | None = "{:.2f}"):
    """Per-category scores of several models side by side: values[model][category] -> score.

    Models named after a stage ("base", "sft", "ppo", ...) get that stage's colour. A category a
    model lacks is left empty. intervals[model][category] = (low, high) adds error bars.
    """
    models = list(values)
    categories = list(dict.fromkeys(c for scores in values.values() for c in scores))
    ax = _new_ax(ax, figsize=(max(6.0, 0.35 * len(models) * len(categories) + 2.5), 4.2))
    width = 0.8 / max(1, len(models))
    for m, model in enumerate(models):
        xs = [c + (m - (len(models) - 1) / 2) * width for c in range(len(categories))]
        heights = [values[model].get(cat, float("nan")) for cat in categories]
        bars = ax.bar(xs, heights, width=width * 0.95, color=stage_color(model, m), label=model)
        bounds = [intervals[model].get(cat) for cat in categories] if intervals and model in intervals else None
        if bounds:
            _error_bars(ax, xs, heights, bounds)
        if fmt and len(models) * len(categories) <= 24:  # labels on more bars would overlap
            _label_bars(ax, bars, heights, fmt, bounds)
    _category_axis(ax, categories, title, ylabel, ylim)
    ax.legend(ncol=min(len(models), 5), loc="upper left", bbox_to_anchor=(0, -0.18 if len(categories) > 4 else -0.1))
    return ax


def _error_bars(ax, xs, heights, bounds):
    for x, h, b in zip(xs, heights, bounds):
        if b is not None and h == h:
            ax.errorbar(x, h, yerr=[[h - b[0]], [b[1] - h]], color="#222222", capsize=3, linewidth=1.0)


def _category_axis(ax, names, title, ylabel, ylim):
    ax.set_xticks(range(len(names)))
    rotate = len(names) > 4 or max((len(n) for n in names), default=0) > 10
    ax.set_xticklabels(names, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel(ylabel)
    ax.grid(axis="x", visible=False)
    if ylim:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)


# --- Gold score against distance from SFT ------------------------------------------------------


def gold_vs_kl(curves: dict[str, tuple[Sequence[float], Sequence[float]]],
               points: dict[str, tuple[float, float]] | None = None, baseline: float | None = None,
               ax=None, title: str = "Gold score against distance from SFT",
               baseline_label: str = "SFT, greedy"):
    """Mean gold score against KL from SFT (nats per answer), the picture of Gao et al. 2022.

    curves[name] = (kls, golds): a line with markers, e.g. best-of-n for n = 1, 2, 4, ... picked
    by the gold labeler and by the reward model. points[name] = (kl, gold): single runs, e.g. PPO.
    baseline: a horizontal reference line (SFT's greedy answers).
    """
    ax = _new_ax(ax, figsize=(6.4, 4.2))
    for i, (name, (kls, golds)) in enumerate(curves.items()):
        if len(kls) != len(golds):
            raise ValueError(f"curve {name!r}: {len(kls)} KL values but {len(golds)} gold scores")
        ax.plot(list(kls), list(golds), "o-", color=stage_color(name, i), label=name, gid=f"curve-{i}")
    for j, (name, (kl, gold)) in enumerate((points or {}).items()):
        ax.plot([kl], [gold], marker="*", markersize=14, linestyle="none",
                color=stage_color(name, len(curves) + j), label=name, gid=f"point-{j}")
    if baseline is not None:
        ax.axhline(baseline, color="#555555", linestyle="--", linewidth=1.0, label=baseline_label)
    ax.set_xlabel("KL from SFT (nats per answer)")
    ax.set_ylabel("mean gold score")
    ax.set_title(title)
    ax.legend(fontsize=9)
    return ax
