"""The live training dashboard: it draws what it is fed, works as train_ppo's callback, stays quiet
without a display, and redraws in place (one output, updated) in a real Jupyter kernel."""

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import base64

import matplotlib.pyplot as plt
import pytest

from helpers.dashboard import DASHBOARD_METRICS, SMOOTH_FROM, TrainingDashboard


def fake_stats(i: int, gold: bool = True) -> dict:
    """What train_ppo passes to its callback after iteration i (0-based), with round numbers."""
    stats = {"iteration": i + 1, "episodes": 8 * (i + 1), "score": 0.5 * i, "kl": 0.25 * i,
             "entropy": 2.0 - 0.1 * i, "clipfrac": 0.01 * i, "response_length": 10.0 + i, "beta": 0.05,
             "explained_variance": float("nan"),
             "samples": [{"prompt": f"What is {i} plus <b>1</b>?", "response": f"{i + 1} & done", "score": 0.1 * i},
                         {"prompt": "Reverse: a b c", "response": "", "score": -1.0},
                         {"prompt": "third", "response": "x", "score": 0.0},
                         {"prompt": "fourth (not shown)", "response": "y", "score": 0.0}]}
    if gold:
        stats["gold"] = 0.3 + 0.1 * i
    return stats


def test_the_six_panels_draw_the_values_they_are_fed():
    dashboard = TrainingDashboard(display=False)
    assert dashboard.metrics == list(DASHBOARD_METRICS)
    for i in range(3):
        dashboard.update(i, fake_stats(i))
    expected = {"score": [0.0, 0.5, 1.0], "gold": [0.3, 0.4, 0.5], "kl": [0.0, 0.25, 0.5],
                "entropy": [2.0, 1.9, 1.8], "clipfrac": [0.0, 0.01, 0.02], "response_length": [10.0, 11.0, 12.0]}
    for metric, values in expected.items():
        line = dashboard.lines[metric]
        assert line.get_gid() == f"dashboard-{metric}"
        assert list(line.get_xdata()) == [8.0, 16.0, 24.0]  # x: episodes, as train_ppo reports them
        assert list(line.get_ydata()) == pytest.approx(values)
        ax = dashboard.axes[metric]
        assert ax.get_xlabel() == "episodes"
        low, high = ax.get_ylim()
        assert low <= min(values) and high >= max(values)  # rescaled to show every point
    assert dashboard.axes["kl"].get_title().endswith(": 0.5")  # titles carry the latest value
    assert "iteration 3" in dashboard.status() and "KL 0.500" in dashboard.status()


def test_a_long_run_adds_a_smoothed_curve_over_the_raw_points():
    dashboard = TrainingDashboard(display=False)
    noisy = [1.0 if i % 2 else 0.0 for i in range(SMOOTH_FROM)]
    for i, value in enumerate(noisy[:-1]):
        dashboard.update(i, {"episodes": i + 1, "score": value})
    assert len(dashboard.smoothed["score"].get_xdata()) == 0  # a short run: the raw points only
    dashboard.update(len(noisy) - 1, {"episodes": len(noisy), "score": noisy[-1]})
    smoothed = list(dashboard.smoothed["score"].get_ydata())
    assert len(smoothed) == len(noisy) and dashboard.smoothed["score"].get_gid() == "dashboard-score-smoothed"
    assert 0.2 < smoothed[-1] < 0.8  # between the two alternating values, not at either
    assert list(dashboard.lines["score"].get_ydata()) == noisy  # the raw points stay


def test_a_missing_metric_leaves_its_panel_empty_with_a_note():
    dashboard = TrainingDashboard(display=False)
    dashboard.update(0, fake_stats(0, gold=False))
    assert len(dashboard.lines["gold"].get_xdata()) == 0
    assert "gold_fn" in dashboard.notes["gold"].get_text()
    assert dashboard.notes["score"].get_text() == ""


def test_any_stats_key_can_be_a_panel_and_the_grid_fits_the_metrics():
    dashboard = TrainingDashboard(metrics=["score", "approx_kl"], display=False)
    dashboard.update(0, {"score": 1.0, "approx_kl": 0.01})  # no episodes: x is the iteration number
    assert list(dashboard.lines["approx_kl"].get_xdata()) == [1.0]
    assert dashboard.axes["score"].get_xlabel() == "iteration"
    assert sum(ax.get_visible() for ax in dashboard.figure.axes) == 2
    with pytest.raises(ValueError):
        TrainingDashboard(metrics=[], display=False)


def test_html_holds_the_figure_and_the_latest_samples_escaped():
    dashboard = TrainingDashboard(display=False, n_samples=3)
    dashboard.update(0, fake_stats(0))
    dashboard.update(1, fake_stats(1))
    page = dashboard.html()
    assert page.startswith("<div class='ppo-dashboard'")
    png = base64.b64decode(page.split("data:image/png;base64,")[1].split("'")[0])
    assert png.startswith(b"\x89PNG")
    assert "What is 1 plus &lt;b&gt;1&lt;/b&gt;?" in page and "<b>1</b>" not in page  # escaped
    assert "2 &amp; done" in page and "(empty)" in page
    assert "iteration 2" in page and "What is 0 plus" not in page  # only the latest iteration
    assert "fourth (not shown)" not in page  # n_samples


def test_no_display_no_output_and_no_pyplot_figure(capsys):
    before = plt.get_fignums()
    dashboard = TrainingDashboard()  # auto: not in a Jupyter kernel here
    assert dashboard.display is False
    dashboard(0, fake_stats(0))  # callable, like train_ppo's callback
    dashboard.update(1, fake_stats(1))
    assert capsys.readouterr().out == ""
    assert plt.get_fignums() == before  # the inline backend would otherwise show a second copy


def test_forced_display_outside_a_kernel_does_not_fail(capsys):
    dashboard = TrainingDashboard(display=True)
    dashboard.update(0, fake_stats(0))
    dashboard.update(1, fake_stats(1))
    assert "HTML" in capsys.readouterr().out  # IPython's plain-text stand-in, nothing worse


def test_load_history_replays_a_finished_run(tmp_path):
    history = {"episodes": [8, 16], "score": [0.1, 0.2], "kl": [0.0, 0.3], "entropy": [1.0, 0.9],
               "clipfrac": [0.0, 0.1], "response_length": [5.0, 6.0], "reward_gain": [1.0]}
    dashboard = TrainingDashboard(display=False).load_history(history)
    assert list(dashboard.lines["kl"].get_ydata()) == [0.0, 0.3]
    assert len(dashboard.lines["gold"].get_xdata()) == 0
    assert dashboard.save(tmp_path / "run.png").read_bytes().startswith(b"\x89PNG")


def test_works_as_the_callback_of_a_real_ppo_run():
    import torch

    from helpers import ppo, world
    from helpers.models import ModelSize, build_causal_lm, value_model_from_causal_lm
    from helpers.tokenizer import train_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tokenizer = train_tokenizer(world.pretraining_corpus(seed=0, n_docs=200), vocab_size=300)
        torch.manual_seed(0)
        policy = build_causal_lm(tokenizer, ModelSize(n_layer=1, n_head=2, n_embd=32, n_positions=96))
        config = ppo.PPOConfig(total_episodes=16, batch_size=8, minibatch_size=8, ppo_epochs=1, max_new_tokens=8,
                               reward_norm=False, samples_to_show=2)
        dashboard = TrainingDashboard(total_iterations=config.n_iterations, display=False)
        models = ppo.PPOModels(policy=policy, reference=copy.deepcopy(policy),
                               value_model=value_model_from_causal_lm(policy), reward_model=None, tokenizer=tokenizer)
        history = ppo.train_ppo(models, world.prompts("ppo", n=16), config, callback=dashboard.update,
                                progress=False, reward_fn=lambda examples, responses: [len(r) for r in responses],
                                gold_fn=lambda examples, responses: [0.5] * len(responses))
    finally:
        torch.set_num_threads(threads)
    for metric in DASHBOARD_METRICS:
        assert list(dashboard.lines[metric].get_ydata()) == pytest.approx(history[metric]), metric
    assert list(dashboard.lines["score"].get_xdata()) == [8.0, 16.0]
    assert len(dashboard.samples) == 2 and {"prompt", "response", "score"} <= set(dashboard.samples[0])
    assert "iteration 2 / 2" in dashboard.status()


def test_redraws_in_place_in_a_jupyter_kernel():
    """In a kernel the dashboard is one output, replaced at every update (update_display_data),
    not a new picture per iteration; nbclient applies the updates as JupyterLab and Colab do."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from nbformat.v4 import new_code_cell, new_notebook

    source = (
        "from helpers.dashboard import TrainingDashboard\n"
        "dashboard = TrainingDashboard(total_iterations=3)\n"
        "for i in range(3):\n"
        "    dashboard.update(i, {'episodes': 8 * (i + 1), 'score': float(i), 'kl': 0.1 * i,\n"
        "                         'samples': [{'prompt': 'p', 'response': f'answer {i}', 'score': 0.0}]})\n"
        "print('done', dashboard.display)\n"
    )
    notebook = new_notebook(cells=[new_code_cell(source)])
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": repo}})
    client.execute()
    outputs = notebook.cells[0].outputs
    pages = [o for o in outputs if o.output_type == "display_data" and "text/html" in o.get("data", {})]
    assert len(pages) == 1, [o.output_type for o in outputs]
    page = pages[0]["data"]["text/html"]
    assert "class='ppo-dashboard'" in page and "data-iteration='3'" in page and "answer 2" in page
    assert any(o.output_type == "stream" and "done True" in o.text for o in outputs)
