"""Course figures: right artists, Agg backend, and the highlighted step stands out."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch, Rectangle

from helpers import plots


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _patch(ax, gid):
    found = [p for p in ax.patches if p.get_gid() == gid]
    assert len(found) == 1, gid
    return found[0]


def test_course_style_sets_readable_defaults():
    plots.use_course_style()
    rc = matplotlib.rcParams
    assert rc["axes.spines.top"] is False and rc["axes.spines.right"] is False
    assert rc["axes.grid"] is True and rc["font.size"] >= 10
    assert to_rgb(rc["axes.prop_cycle"].by_key()["color"][0]) == to_rgb(plots.STAGE_COLORS["sft"])


def test_one_distinct_colour_per_stage():
    stages = ["base", "sft", "rm", "ppo", "ppo-ptx"]
    assert len({plots.STAGE_COLORS[s] for s in stages}) == len(stages)
    assert plots.stage_color("PPO_ptx") == plots.STAGE_COLORS["ppo-ptx"]
    assert plots.stage_color("my model", 0) != plots.stage_color("my model", 1)


@pytest.mark.parametrize("highlight", [1, 2, 3])
def test_three_step_diagram_highlights_one_step(highlight):
    ax = plots.three_step_diagram(highlight=highlight)
    assert isinstance(ax, Axes)
    headers = {step: to_rgb(_patch(ax, f"step{step}-header").get_facecolor()) for step in (1, 2, 3)}
    lit = headers.pop(highlight)
    assert all(other != lit for other in headers.values())
    assert len(set(headers.values())) == 1  # the other two share the same grey
    stage = ["sft", "rm", "ppo"][highlight - 1]
    assert lit == to_rgb(plots.STAGE_COLORS[stage])
    # the boxes of the lit step are tinted with its colour, the others' are not
    lit_box = to_rgb(_patch(ax, f"step{highlight}-box0").get_facecolor())
    other = 1 if highlight != 1 else 2
    assert lit_box != to_rgb(_patch(ax, f"step{other}-box0").get_facecolor())


def test_three_step_diagram_contents():
    ax = plots.three_step_diagram()
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    # 3 headers, 3 + 3 + 4 step boxes, 3 products
    assert len(boxes) == 3 + 10 + 3
    text = " ".join(t.get_text() for t in ax.texts)
    for words in ["Step 1", "Step 2", "Step 3", "SFT model", "Reward model", "rank", "KL", "PPO"]:
        assert words in text
    with pytest.raises(ValueError):
        plots.three_step_diagram(highlight=4)


def test_three_step_diagram_text_stays_inside_its_boxes():
    ax = plots.three_step_diagram(highlight=2)
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    box_extents = [p.get_window_extent(renderer) for p in ax.patches if isinstance(p, FancyBboxPatch)]
    for t in ax.texts:
        bb = t.get_window_extent(renderer)
        holders = [b for b in box_extents if b.x0 <= bb.x0 + 1 and bb.x1 <= b.x1 + 1 and b.y0 <= bb.y0 + 1
                   and bb.y1 <= b.y1 + 1]
        centre_inside = [b for b in box_extents if b.contains(*bb.get_points().mean(0))]
        if centre_inside:  # a box's label: must fit in that box
            assert holders, f"text overflows its box: {t.get_text()!r}"


def test_saved_diagram(tmp_path):
    path = plots.save_three_step_diagram(tmp_path / "figs" / "steps.png", highlight=1)
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 10_000 < path.stat().st_size < 400_000


def test_committed_readme_figure_exists():
    from helpers.config import ROOT

    assert (ROOT / "notebooks" / "figures" / "three_steps.png").exists()


def test_loss_curve_draws_train_and_eval():
    history = {"step": list(range(50)), "train_loss": [3.0 - 0.04 * i for i in range(50)],
               "eval_step": [0, 25, 49], "eval_loss": [3.1, 2.2, 1.2]}
    ax = plots.loss_curve(history, title="SFT")
    lines = {line.get_gid(): line for line in ax.get_lines()}
    assert set(lines) == {"train-raw", "train-smoothed", "eval"}
    assert list(lines["eval"].get_xdata()) == [0, 25, 49]
    smoothed = list(lines["train-smoothed"].get_ydata())
    assert smoothed[0] == pytest.approx(3.0)  # bias-corrected: the first point is not pulled to 0
    assert ax.get_title() == "SFT"


def test_loss_curve_without_eval_and_mismatched_lengths():
    ax = plots.loss_curve({"step": [1, 2, 3], "train_loss": [1.0, 0.9, 0.8]})
    assert len(ax.get_lines()) == 2
    with pytest.raises(ValueError):
        plots.loss_curve({"step": [1, 2], "train_loss": [1.0]})


def test_smooth_of_a_constant_is_that_constant():
    assert plots.smooth([2.0] * 10, weight=0.9) == pytest.approx([2.0] * 10)


def _bars(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_bar_by_category():
    values = {"arithmetic": 0.4, "harmful": 0.9, "unknown": 0.1}
    ax = plots.bar_by_category(values, title="SFT", intervals={"arithmetic": (0.3, 0.5)})
    bars = _bars(ax)
    assert len(bars) == 3
    assert [b.get_height() for b in bars] == pytest.approx([0.4, 0.9, 0.1])
    assert [t.get_text() for t in ax.get_xticklabels()] == list(values)
    assert len(ax.texts) == 3  # one value label per bar
    assert any(isinstance(c, Line2D) for c in ax.get_children())  # the error bar


def test_grouped_bars():
    values = {"sft": {"a": 0.2, "b": 0.5, "c": 0.7}, "ppo": {"a": 0.4, "b": 0.6}}
    ax = plots.grouped_bars(values, title="by family", intervals={"ppo": {"a": (0.3, 0.5)}})
    bars = _bars(ax)
    assert len(bars) == 2 * 3  # the missing (ppo, c) is an empty (NaN) bar
    colours = {to_rgb(b.get_facecolor()) for b in bars}
    assert colours == {to_rgb(plots.STAGE_COLORS["sft"]), to_rgb(plots.STAGE_COLORS["ppo"])}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sft", "ppo"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]


def test_functions_draw_on_a_given_axes():
    fig, axes = plt.subplots(1, 3)
    assert plots.loss_curve({"step": [0, 1], "train_loss": [1.0, 0.5]}, ax=axes[0]) is axes[0]
    assert plots.bar_by_category({"x": 1.0}, ax=axes[1]) is axes[1]
    assert plots.grouped_bars({"sft": {"x": 1.0}}, ax=axes[2]) is axes[2]


def test_gold_vs_kl_draws_curves_points_and_baseline():
    ax = plots.gold_vs_kl({"best-of-n, gold picks": ([0.0, 0.19, 0.64], [0.6, 0.7, 0.75]),
                           "best-of-n, RM picks": ([0.0, 0.19, 0.64], [0.6, 0.66, 0.66])},
                          points={"ppo": (0.5, 0.72)}, baseline=0.69)
    lines = {line.get_gid(): line for line in ax.get_lines()}
    assert list(lines["curve-1"].get_ydata()) == [0.6, 0.66, 0.66]
    assert list(lines["point-0"].get_xdata()) == [0.5]
    assert any(list(line.get_ydata()) == [0.69, 0.69] for line in ax.get_lines())  # the baseline
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["best-of-n, gold picks", "best-of-n, RM picks", "ppo", "SFT, greedy"]
    assert to_rgb(lines["point-0"].get_color()) == to_rgb(plots.stage_color("ppo"))
    plt.close("all")
    with pytest.raises(ValueError, match="2 KL values but 1"):
        plots.gold_vs_kl({"x": ([0, 1], [0.5])})
