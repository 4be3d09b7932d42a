"""A corpus named with ``task.corpus`` is read whole when it fits (issue 28, friction 8): it
was cut at 2 MB by default although a 24 MB byte corpus fits any device. The default corpus
(the stdlib sources) still reads its first 2 MB, so the default experiment does not change."""

import numpy as np
import pytest

from jaxhpo.config import Config, ConfigError, build, parse_override, validate
from jaxhpo.tasks import lm
from jaxhpo.tasks.lm import DEFAULT_CORPUS_BYTES, corpus_size, load_corpus


def _corpus(tmp_path, n: int):
    path = tmp_path / "corpus.txt"
    rng = np.random.default_rng(0)
    path.write_bytes(bytes(rng.integers(97, 123, n, dtype=np.uint8)))
    return path


def test_named_corpus_is_read_whole_by_default(tmp_path, capsys):
    """A 3 MB named corpus (over the old 2 MB default) is read whole, with no notice."""
    path = _corpus(tmp_path, 3_000_000)
    assert Config().task.max_bytes is None
    data = load_corpus(str(path), Config().task.max_bytes)
    assert len(data) == 3_000_000
    assert data.tobytes() == path.read_bytes()
    assert "training on the first" not in capsys.readouterr().err


def test_default_corpus_still_reads_its_first_2mb(capsys):
    """The stdlib sources: the same first 2,000,000 bytes as before (the default experiment's
    results unchanged)."""
    data = load_corpus(None, None)
    assert len(data) == DEFAULT_CORPUS_BYTES == 2_000_000
    assert np.array_equal(data, load_corpus(None, 2_000_000))


def test_named_corpus_over_the_cap_is_cut_and_says_so(tmp_path, capsys, monkeypatch):
    """Past the cap a named corpus is cut, and the cut says so on stderr as before."""
    monkeypatch.setattr(lm, "NAMED_CORPUS_CAP", 50_000)
    path = _corpus(tmp_path, 60_000)
    assert len(load_corpus(str(path), None)) == 50_000
    err = capsys.readouterr().err
    assert "training on the first 50,000 of the corpus's 60,000 bytes" in err
    assert "task.max_bytes unset" in err
    # an explicit task.max_bytes still wins, either way
    assert len(load_corpus(str(path), 20_000)) == 20_000
    assert len(load_corpus(str(path), 10**9)) == corpus_size(str(path)) == 60_000


def test_max_bytes_override_still_checked():
    """``task.max_bytes`` set on the command line is an int checked as before; unset is None."""
    cfg = build(Config(), parse_override("task.max_bytes=200000"))
    assert cfg.task.max_bytes == 200_000
    validate(cfg)
    validate(Config())
    with pytest.raises(ConfigError, match="task.max_bytes: must be >= 1"):
        validate(build(Config(), parse_override("task.max_bytes=0")))
