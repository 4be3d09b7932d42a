"""Prepared token data (issue 19): tokenizers, token files, the host feed, > 2**31 tokens."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhpo.data import feed as feeds
from jaxhpo.data.prepare import prepare_data, read_manifest
from jaxhpo.data.tokenizer import ByteTokenizer, load, train_bpe

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


def _corpus(tmp_path, lines=4000, seed=0):
    """A generated text corpus (two files, some non-ASCII), no download."""
    rng = np.random.default_rng(seed)
    folder = tmp_path / "corpus"
    folder.mkdir()
    text = []
    for i in range(lines):
        words = rng.choice(WORDS, size=rng.integers(3, 12))
        text.append(f"{i % 17} " + " ".join(words) + (" héllo 日本\n" if i % 9 == 0 else "\n"))
    half = len(text) // 2
    (folder / "a.txt").write_text("".join(text[:half]))
    (folder / "b.txt").write_text("".join(text[half:]))
    return folder, "".join(text)


def test_bpe_tokenizer_round_trips_text():
    texts = ["def f(x):\n    return x ** 2\n", "naïve café 日本語 \t tabs\n\n", "a" * 50]
    tok = train_bpe(texts * 20, vocab_size=300)
    assert tok.vocab_size <= 300
    for t in [*texts, "unseen text: ζ ω ∑ ✓ \r\n end"]:
        assert tok.decode(tok.encode(t)) == t
    assert ByteTokenizer().decode(ByteTokenizer().encode("héllo")) == "héllo"


@pytest.mark.parametrize("kind", ["bytes", "bpe"])
def test_prepared_files_round_trip_the_corpus(tmp_path, kind):
    folder, text = _corpus(tmp_path)
    out = tmp_path / "data"
    lines = []
    manifest = prepare_data(str(folder), out, tokenizer=kind, vocab_size=400, log=lines.append)
    assert lines and lines[-1].startswith("prepare: ")
    assert manifest == read_manifest(out) == json.loads((out / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16"
    parts = [
        np.fromfile(out / f"{s}.bin", np.uint16) for s in ("train", "val", "test")
    ]  # contiguous splits: their concatenation is the corpus
    assert [len(p) for p in parts] == [manifest["splits"][s]["tokens"] for s in manifest["splits"]]
    tok = load(out, manifest["tokenizer"])
    assert tok.decode(np.concatenate(parts)) == text
    assert manifest["corpus"]["bytes"] == len(text.encode())
    if kind == "bpe":
        assert sum(len(p) for p in parts) < len(text.encode()) / 2  # BPE compresses


def test_manifest_missing_or_truncated_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="task.data: .* not a prepared data folder"):
        read_manifest(tmp_path)
    folder, _ = _corpus(tmp_path, lines=500)
    prepare_data(str(folder), tmp_path / "d", log=None)
    with open(tmp_path / "d" / "val.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(ValueError, match="val.bin is missing or not"):
        read_manifest(tmp_path / "d")


@pytest.mark.parametrize("num_starts", [1000, 2**31 - 7])
def test_window_starts_host_equal_device(num_starts):
    steps = np.arange(0, 50, 7)
    host = feeds.window_starts(5, steps, 6, num_starts)
    dev = jax.jit(jax.vmap(lambda s: feeds.window_starts_device(5, s, 6, num_starts)))(
        jnp.asarray(steps, jnp.int32)
    )
    np.testing.assert_array_equal(host, np.asarray(dev))
    assert host.min() >= 0 and host.max() < num_starts
    assert len(np.unique(host)) >= host.size - 3  # not stuck (a few birthday collisions)


def test_windows_over_2_pow_31_tokens_on_a_sparse_file(tmp_path):
    """Regression (OverflowError maxval): a token file of 2**32 + 2**20 uint16 tokens (a sparse
    8 GB file: nothing is written but the windows) is sampled beyond 2**31 with int64 offsets."""
    n, L, B = 2**32 + 2**20, 8, 64
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        f.truncate(n * 2)
    mm = np.memmap(path, np.uint16, "r+", shape=(n,))
    feed = feeds.SegmentFeed(mm, seed=1, batch_size=B, seq_len=L)
    assert feed.num_starts == n - L > 2**31
    starts = feeds.window_starts(1, np.arange(3), B, feed.num_starts)
    assert starts.dtype == np.int64 and (starts > 2**31).any()
    for s in starts.ravel():  # a window's tokens say where they are (mod 2**16)
        mm[s : s + L + 1] = (s + np.arange(L + 1)) % 2**16
    mm.flush()
    got = feed.read(np.arange(3))
    want = (starts[..., None] + np.arange(L + 1)) % 2**16
    np.testing.assert_array_equal(got["windows"], want)


def test_prefetch_gives_exactly_the_direct_reads():
    tokens = np.arange(100_000, dtype=np.uint32) * 7 % 65_521
    a = feeds.SegmentFeed(tokens, 3, 4, 16)
    b = feeds.SegmentFeed(tokens, 3, 4, 16)
    steps = np.array([0, 0, 8, 8, 3])
    for _ in range(3):
        a.prefetch(steps, 5)
        got, want = a.segment(steps, 5), b.segment(steps, 5)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
        steps = steps + 5
    assert a.stats["prefetched"] == 3 and b.stats["direct"] == 3
    a.prefetch(steps, 5)  # a mispredicted prefetch is not used
    other = a.segment(steps + 1, 5)
    np.testing.assert_array_equal(other["windows"], b.segment(steps + 1, 5)["windows"])


def test_needed_steps_cover_every_members_segment():
    got = feeds.needed_steps(np.array([0, 0, 10, 3]), 4)
    assert len(got) == 16  # 12 distinct steps -> 4 * 2**2
    assert set(got) == {0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13}
    assert np.all(np.diff(got) >= 0)


def test_cli_data_prepare_and_its_errors(tmp_path, capsys):
    from jaxhpo.cli import main

    folder, text = _corpus(tmp_path, lines=300)
    out = tmp_path / "d"
    assert main(["data", "prepare", str(folder), "--out", str(out)]) == 0
    assert "prepare: " in capsys.readouterr().err
    assert read_manifest(out)["corpus"]["bytes"] == len(text.encode())
    assert main(["data", "prepare", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "jaxhpo: error: CORPUS: path does not exist" in capsys.readouterr().err
    assert main(["data", "prepare", str(folder), "--out", str(out), "--vocab-size", "9"]) == 0
    err = ["data", "prepare", str(folder), "--tokenizer", "bpe", "--vocab-size", "9"]
    assert main([*err, "--out", str(out)]) == 2
    assert "--vocab-size: must be in [257" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task.data={tmp}", "task.data: .* is not a prepared data folder"),
        ("task.kind=modular", "task.data: not a setting of task 'modular'"),
        ("train.compiled=true", "task.feed: host-fed data trains in the host loop"),
        ("task.feed=disk", "task.feed: unknown 'disk'"),
    ],
)
def test_run_on_bad_task_data_is_a_one_line_error(tmp_path, capsys, override, message):
    import re

    from jaxhpo.cli import main

    folder, _ = _corpus(tmp_path, lines=300)
    prepare_data(str(folder), tmp_path / "d", log=None)
    args = ["run", f"task.data={tmp_path / 'd'}", override.format(tmp=tmp_path), "--quiet"]
    assert main([*args, f"out_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
