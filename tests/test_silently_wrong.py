"""Input that used to be silently wrong (issue 16): ``strategy.points`` ignored by the strategies
that sample their members, and a corpus cut at ``task.max_bytes`` with no word."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_LM_OVERRIDES

from jaxhpo.cli import load_config
from jaxhpo.run.prepare import make_strategy
from jaxhpo.space import Space
from jaxhpo.tasks.lm import LanguageModelTask

POINTS = "strategy.points=[{lr: 0.00123}, {lr: 0.002, warmup_steps: 7}]"


@pytest.mark.parametrize(
    "argv",
    [
        ["lm-random"],
        ["lm-random", "strategy.name=sobol"],
        ["lm-median"],
        ["lm-halving"],
        ["lm-halving", "strategy.sampler=sobol"],
        ["lm-hyperband"],
    ],
    ids=lambda a: " ".join(a),
)
def test_points_are_the_first_members_of_sampling_strategies(argv):
    """Regression: ``lm-random strategy.points=[{lr: 0.00123}]`` gave member 0 an lr of
    0.00378 (random, sobol, halving and median ignored points)."""
    space_args = ["space.warmup_steps=int(0, 20)"]
    cfg = load_config(argv[0], [*argv[1:], *TINY_LM_OVERRIDES, *space_args, POINTS])
    space = Space.from_config(cfg.space, where="space")
    _, cols = make_strategy(cfg).init(cfg.seed, space, cfg.population.size)
    assert cols["lr"][0] == pytest.approx(0.00123) and cols["lr"][1] == pytest.approx(0.002)
    assert cols["warmup_steps"][1] == 7
    assert cols["lr"][2] != pytest.approx(0.00123)  # the rest stay sampled
    space.validate_values(cols)


def test_points_outnumbering_the_population_are_refused():
    cfg = load_config("lm-random", [*TINY_LM_OVERRIDES, "population.size=1", POINTS])
    space = Space.from_config(cfg.space, where="space")
    with pytest.raises(ValueError, match=r"strategy\.points: 2 points but only 1 members"):
        make_strategy(cfg).init(cfg.seed, space, 1)


def test_corpus_cut_at_max_bytes_says_so(tmp_path, capsys):
    """Regression: an 8 MB corpus trained on its first 2 MB with no word. The cut is said on
    stderr (bytes used of the corpus's size) and the task's description (run.json) holds both."""
    corpus = tmp_path / "corpus.txt"
    rng = np.random.default_rng(0)
    corpus.write_bytes(bytes(rng.integers(97, 123, 60_000, dtype=np.uint8)))
    task = LanguageModelTask(corpus=str(corpus), max_bytes=20_000, seq_len=16, batch_size=2)
    err = capsys.readouterr().err
    assert "task.corpus: training on the first 20,000 of the corpus's 60,000 bytes" in err
    assert "task.max_bytes=20,000" in err
    info = task.describe()
    assert info["corpus_bytes"] == 20_000 and info["corpus_total_bytes"] == 60_000
    whole = LanguageModelTask(corpus=str(corpus), max_bytes=100_000, seq_len=16, batch_size=2)
    assert "training on the first" not in capsys.readouterr().err
    assert whole.describe()["corpus_bytes"] == whole.describe()["corpus_total_bytes"] == 60_000
