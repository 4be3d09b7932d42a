"""The tasks: deterministic addressed data, correct labels and splits, one-line field errors."""

from __future__ import annotations

import collections
import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_MODEL

from jaxhpo.population import Population
from jaxhpo.tasks import BracketsTask, LanguageModelTask, ModularArithmeticTask
from jaxhpo.tasks.brackets import CLOSE, CLS, OPEN, PAD, make_brackets
from jaxhpo.tasks.lm import load_corpus
from jaxhpo.tasks.modular import modular_table

# ------------------------------------------------------------------------------------------------
# Language modelling

LM_SEQ = 8


def _random_corpus(n: int, seed: int = 0) -> bytes:
    """Random bytes: every 9-byte window is unique, so a window's position can be found."""
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def lm_random(tmp_path_factory):
    raw = _random_corpus(20_000)
    path = tmp_path_factory.mktemp("lm") / "random.txt"
    path.write_bytes(raw)
    task = LanguageModelTask(
        corpus=str(path),
        max_bytes=1_000_000,
        seq_len=LM_SEQ,
        batch_size=8,
        eval_batches=3,
        model=TINY_MODEL,
    )
    return task, raw


def _one_line_error(exc: pytest.ExceptionInfo, prefix: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    assert msg.startswith(prefix), msg
    return msg


def test_lm_train_batch_is_addressed_by_seed_and_step(lm_task):
    batch = jax.jit(lm_task.train_batch)
    b3 = batch(lm_task.train_data, jnp.int32(3))
    again = batch(lm_task.train_data, jnp.int32(3))
    for k in ("tokens", "targets", "weights"):
        np.testing.assert_array_equal(np.asarray(b3[k]), np.asarray(again[k]))
    assert b3["tokens"].shape == (4, 16) and b3["tokens"].dtype == jnp.int32
    b4 = batch(lm_task.train_data, jnp.int32(4))
    assert not np.array_equal(np.asarray(b3["tokens"]), np.asarray(b4["tokens"]))
    np.testing.assert_array_equal(np.asarray(b3["weights"]), np.ones((4, 16), np.float32))

    # A fresh task with the same data seed gives the same batch; another seed a different one.
    same = LanguageModelTask(
        corpus=None, max_bytes=200_000, seq_len=16, batch_size=4, eval_batches=2, model=TINY_MODEL
    )
    other = LanguageModelTask(
        corpus=None,
        max_bytes=200_000,
        seq_len=16,
        batch_size=4,
        eval_batches=2,
        data_seed=1,
        model=TINY_MODEL,
    )
    np.testing.assert_array_equal(
        np.asarray(same.train_batch(same.train_data, jnp.int32(3))["tokens"]),
        np.asarray(b3["tokens"]),
    )
    assert not np.array_equal(
        np.asarray(other.train_batch(other.train_data, jnp.int32(3))["tokens"]),
        np.asarray(b3["tokens"]),
    )


def test_lm_train_windows_are_shifted_corpus_slices_from_the_train_region(lm_random):
    task, raw = lm_random
    n = len(raw)
    n_train = int(n * 0.9)
    batch = jax.jit(task.train_batch)
    starts = []
    for step in range(25):
        b = jax.device_get(batch(task.train_data, jnp.int32(step)))
        tok, tgt = np.asarray(b["tokens"]), np.asarray(b["targets"])
        assert tok.shape == tgt.shape == (8, LM_SEQ)
        for row in range(tok.shape[0]):
            window = bytes(tok[row].astype(np.uint8)) + bytes(tgt[row, -1:].astype(np.uint8))
            pos = raw.find(window)
            assert pos >= 0, "a training window is not a slice of the corpus"
            assert raw.find(window, pos + 1) == -1  # unique: the position is known
            # targets are the tokens shifted by one, straight from the corpus bytes
            np.testing.assert_array_equal(
                tgt[row], np.frombuffer(raw[pos + 1 : pos + 1 + LM_SEQ], np.uint8)
            )
            assert pos + LM_SEQ + 1 <= n_train, f"window at {pos} leaves the train region"
            starts.append(pos)
    # the windows are spread over the train region, not stuck in one place
    assert len(set(starts)) > 150
    assert min(starts) < n_train // 4 and max(starts) > 3 * n_train // 4


def test_lm_eval_windows_lie_in_their_regions(lm_random):
    task, raw = lm_random
    n = len(raw)
    n_train, n_val = int(n * 0.9), int(n * 0.05)
    train_region = raw[:n_train]
    regions = {"val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    for split, (lo, hi) in regions.items():
        data = getattr(task.splits, split)
        tok, tgt, w = (np.asarray(data[k]) for k in ("tokens", "targets", "weights"))
        assert tok.shape == (3, 8, LM_SEQ)
        np.testing.assert_array_equal(w, np.ones_like(w))
        tok, tgt = tok.reshape(-1, LM_SEQ), tgt.reshape(-1, LM_SEQ)
        np.testing.assert_array_equal(tok[:, 1:], tgt[:, :-1])
        for row in range(tok.shape[0]):
            window = bytes(tok[row].astype(np.uint8)) + bytes(tgt[row, -1:].astype(np.uint8))
            pos = raw.find(window)
            assert lo <= pos and pos + LM_SEQ + 1 <= hi, (split, pos, lo, hi)
            assert train_region.find(window) == -1  # no overlap with the training bytes


def test_lm_user_file_is_read_exactly(tmp_path):
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(60))
    raw = text.encode()
    path = tmp_path / "book.txt"
    path.write_bytes(raw)
    np.testing.assert_array_equal(load_corpus(str(path), 10**6), np.frombuffer(raw, np.uint8))
    np.testing.assert_array_equal(load_corpus(str(path), 100), np.frombuffer(raw[:100], np.uint8))
    task = LanguageModelTask(
        corpus=str(path),
        max_bytes=10**6,
        seq_len=LM_SEQ,
        batch_size=2,
        eval_batches=1,
        model=TINY_MODEL,
    )
    assert task.corpus_bytes == len(raw)
    assert task.corpus_sha1 == hashlib.sha1(raw).hexdigest()[:12]
    assert bytes(np.asarray(task.train_data["corpus"])) == raw[: int(len(raw) * 0.9)]
    assert task.describe()["corpus"] == str(path)


def test_lm_folder_of_text_files(tmp_path):
    a = _random_corpus(1500, seed=1)
    b = _random_corpus(1500, seed=2)
    (tmp_path / "a.txt").write_bytes(a)
    (tmp_path / "b.txt").write_bytes(b)
    (tmp_path / "ignored.bin").write_bytes(b"\x00" * 5000)
    np.testing.assert_array_equal(load_corpus(str(tmp_path), 10**6), np.frombuffer(a + b, np.uint8))
    task = LanguageModelTask(
        corpus=str(tmp_path),
        max_bytes=10**6,
        seq_len=LM_SEQ,
        batch_size=2,
        eval_batches=1,
        model=TINY_MODEL,
    )
    assert task.corpus_bytes == 3000
    assert bytes(np.asarray(task.train_data["corpus"])) == (a + b)[:2700]


@pytest.mark.parametrize("case", ["missing", "empty", "too_small", "empty_folder"])
def test_lm_bad_corpus_raises_one_line_error(tmp_path, case):
    if case == "missing":
        path = tmp_path / "does-not-exist.txt"
    elif case == "empty":
        path = tmp_path / "empty.txt"
        path.write_bytes(b"")
    elif case == "too_small":
        path = tmp_path / "small.txt"
        path.write_bytes(b"x = 1\n" * 50)  # 300 bytes: 15 validation bytes < 2 * (16 + 1)
    else:
        path = tmp_path / "folder"
        path.mkdir()
        (path / "data.bin").write_bytes(b"abc" * 1000)
    with pytest.raises(ValueError) as exc:
        LanguageModelTask(corpus=str(path), seq_len=16, batch_size=2, model=TINY_MODEL)
    _one_line_error(exc, "task.corpus:")


# ------------------------------------------------------------------------------------------------
# Modular arithmetic


def test_modular_table_by_hand():
    p = 7
    rows = {
        op: {(int(a), int(b)): int(c) for a, b, c in zip(*modular_table(p, op), strict=True)}
        for op in "+-*/"
    }
    assert len(rows["+"]) == len(rows["-"]) == len(rows["*"]) == p * p
    assert len(rows["/"]) == p * (p - 1)  # no division by zero
    assert rows["+"][(5, 4)] == 2
    assert rows["-"][(2, 5)] == 4
    assert rows["*"][(3, 5)] == 1
    assert rows["/"][(3, 5)] == 2  # 5^-1 = 3 (mod 7): 3 * 3 = 9 = 2
    assert rows["/"][(1, 2)] == 4 and rows["/"][(6, 3)] == 2 and rows["/"][(0, 6)] == 0
    assert all(b != 0 for _, b in rows["/"])
    for (a, b), c in rows["/"].items():
        assert c == a * pow(b, p - 2, p) % p
        assert c * b % p == a
    for (a, b), c in rows["-"].items():
        assert (c + b) % p == a


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_modular_full_table_matches_python(op):
    p = 13
    py = {
        "+": lambda a, b: (a + b) % p,
        "-": lambda a, b: (a - b) % p,
        "*": lambda a, b: a * b % p,
        "/": lambda a, b: a * pow(b, p - 2, p) % p,
    }[op]
    a, b, c = modular_table(p, op)
    pairs = {(int(x), int(y)) for x, y in zip(a, b, strict=True)}
    assert pairs == {(x, y) for x in range(p) for y in range(1 if op == "/" else 0, p)}
    assert all(int(z) == py(int(x), int(y)) for x, y, z in zip(a, b, c, strict=True))


def _split_examples(tokens, targets, weights):
    """(a, b) -> answer for the real examples (weight on the answer position)."""
    tok = np.asarray(tokens).reshape(-1, 4)
    tgt = np.asarray(targets).reshape(-1, 4)
    w = np.asarray(weights).reshape(-1, 4)
    real = w[:, 3] > 0
    return [(int(t[0]), int(t[2]), int(g[3])) for t, g in zip(tok[real], tgt[real], strict=True)]


@pytest.mark.parametrize(("op", "train_frac"), [("+", 0.5), ("/", 0.3)])
def test_modular_splits_partition_the_table(op, train_frac):
    p = 11
    task = ModularArithmeticTask(
        modulus=p, operation=op, train_frac=train_frac, batch_size=16, model=TINY_MODEL
    )
    a, b, c = modular_table(p, op)
    table = {(int(x), int(y)): int(z) for x, y, z in zip(a, b, c, strict=True)}
    N = len(table)
    tr_tok = np.asarray(task.train_data["tokens"])
    tr = [
        (int(t[0]), int(t[2]), int(z))
        for t, z in zip(tr_tok, task.train_data["answers"], strict=True)
    ]
    va = _split_examples(**{k: task.splits.val[k] for k in ("tokens", "targets", "weights")})
    te = _split_examples(**{k: task.splits.test[k] for k in ("tokens", "targets", "weights")})
    n_train = round(train_frac * N)
    assert len(tr) == n_train
    assert len(va) == (N - n_train) // 2
    assert len(te) == N - n_train - len(va)
    keys = [set((x, y) for x, y, _ in s) for s in (tr, va, te)]
    assert sum(map(len, keys)) == N  # no duplicates inside a split
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert keys[0] | keys[1] | keys[2] == set(table)
    for split in (tr, va, te):
        assert all(table[(x, y)] == z for x, y, z in split)
    # every example is [a, op, b, =]
    assert np.all(tr_tok[:, 1] == p) and np.all(tr_tok[:, 3] == p + 1)


def test_modular_loss_weight_only_on_the_answer():
    p = 11
    task = ModularArithmeticTask(modulus=p, train_frac=0.5, batch_size=16, model=TINY_MODEL)
    b = jax.device_get(task.train_batch(task.train_data, jnp.int32(5)))
    w = np.asarray(b["weights"])
    assert w.shape == (16, 4)
    np.testing.assert_array_equal(w, np.tile([0.0, 0.0, 0.0, 1.0], (16, 1)))
    tok, tgt = np.asarray(b["tokens"]), np.asarray(b["targets"])
    np.testing.assert_array_equal(tgt[:, 3], (tok[:, 0] + tok[:, 2]) % p)
    np.testing.assert_array_equal(tgt[:, :3], tok[:, 1:])
    for split in (task.splits.val, task.splits.test):
        w = np.asarray(split["weights"])
        assert np.all(w[..., :3] == 0)
        assert set(np.unique(w[..., 3])) <= {0.0, 1.0}
    # 121 examples, 60 train: 30 val in 2 batches of 16 -> 2 padding rows with weight 0
    assert float(np.asarray(task.splits.val["weights"]).sum()) == 30
    assert np.asarray(task.splits.val["weights"]).shape == (2, 16, 4)


@pytest.mark.parametrize(
    ("kwargs", "prefix"),
    [
        ({"train_frac": 0.0}, "task.train_frac:"),
        ({"train_frac": 1.0}, "task.train_frac:"),
        ({"train_frac": 1.5}, "task.train_frac:"),
        ({"train_frac": -0.2}, "task.train_frac:"),
        ({"modulus": 2, "train_frac": 0.9}, "task.train_frac:"),  # no validation example left
        ({"modulus": 1}, "task.modulus:"),
        ({"modulus": 0}, "task.modulus:"),
        ({"modulus": 9, "operation": "/"}, "task.modulus:"),
        ({"modulus": 7, "operation": "^"}, "task.operation:"),
    ],
)
def test_modular_bad_arguments(kwargs, prefix):
    with pytest.raises(ValueError) as exc:
        ModularArithmeticTask(**{"modulus": 7, "batch_size": 8, "model": TINY_MODEL, **kwargs})
    _one_line_error(exc, prefix)


def test_modular_non_prime_modulus_is_fine_without_division():
    task = ModularArithmeticTask(modulus=9, operation="*", batch_size=8, model=TINY_MODEL)
    assert task.model_config.vocab_size == 11


# ------------------------------------------------------------------------------------------------
# Balanced brackets

BR_N, BR_LEN = 1000, 24


@pytest.fixture(scope="module")
def brackets():
    return BracketsTask(num_examples=BR_N, seq_len=BR_LEN, batch_size=16, model=TINY_MODEL)


def _is_balanced(row: np.ndarray) -> bool:
    depth = 0
    for t in row:
        if t == OPEN:
            depth += 1
        elif t == CLOSE:
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def _real_rows(split):
    w = np.asarray(split["weights"]).reshape(-1)
    real = w > 0
    tok = np.asarray(split["tokens"]).reshape(-1, BR_LEN)
    mask = np.asarray(split["mask"]).reshape(-1, BR_LEN)
    lab = np.asarray(split["targets"]).reshape(-1)
    return tok[real], mask[real], lab[real]


def _all_splits(task):
    train = tuple(np.asarray(task.train_data[k]) for k in ("tokens", "mask", "labels"))
    return {
        "train": train,
        "val": _real_rows(task.splits.val),
        "test": _real_rows(task.splits.test),
    }


def test_brackets_labels_and_sequences(brackets):
    for name, (tok, mask, lab) in _all_splits(brackets).items():
        assert np.all(tok[:, 0] == CLS), name
        frac = lab.mean()
        assert 0.4 <= frac <= 0.6, (name, frac)
        for row, m, y in zip(tok, mask, lab, strict=True):
            body = row[1:]
            n_real = int(np.sum(body != PAD))
            assert n_real >= 2 and n_real % 2 == 0
            assert np.all(body[:n_real] != PAD) and np.all(body[n_real:] == PAD)  # PAD suffix
            np.testing.assert_array_equal(m, row != PAD)  # mask matches the PAD tokens
            seq = body[:n_real]
            assert set(np.unique(seq)) <= {OPEN, CLOSE}
            assert int(y) == int(_is_balanced(seq)), (name, row, y)
            if y == 0:
                assert np.sum(seq == OPEN) == np.sum(seq == CLOSE)  # counting is not enough


def test_brackets_splits_partition_the_examples(brackets):
    splits = _all_splits(brackets)
    sizes = {k: len(v[2]) for k, v in splits.items()}
    assert sizes == {"train": 800, "val": 100, "test": 100}
    tokens, mask, labels = make_brackets(BR_N, BR_LEN, 0)

    def multiset(tok, lab):
        return collections.Counter((r.tobytes(), int(y)) for r, y in zip(tok, lab, strict=True))

    parts = sum((multiset(v[0], v[2]) for v in splits.values()), collections.Counter())
    assert parts == multiset(tokens, labels)
    # and in order: train = first 80 %, val = next 10 %, test = the rest
    np.testing.assert_array_equal(splits["train"][0], tokens[:800])
    np.testing.assert_array_equal(splits["val"][0], tokens[800:900])
    np.testing.assert_array_equal(splits["test"][0], tokens[900:])


def test_brackets_splits_share_no_sequence(brackets):
    """Regression: sampling with replacement put ~half of val/test verbatim into train."""
    rows = {k: {r.tobytes() for r in v[0]} for k, v in _all_splits(brackets).items()}
    assert len(rows["train"]) == 800 and len(rows["val"]) == 100 and len(rows["test"]) == 100
    assert not rows["train"] & rows["val"]
    assert not rows["train"] & rows["test"]
    assert not rows["val"] & rows["test"]


def test_brackets_eval_padding_has_zero_weight(brackets):
    for split in (brackets.splits.val, brackets.splits.test):
        w = np.asarray(split["weights"])
        assert w.shape == (7, 16)  # 100 examples -> 7 batches of 16, 12 padding rows
        flat = w.reshape(-1)
        np.testing.assert_array_equal(flat[:100], np.ones(100))
        np.testing.assert_array_equal(flat[100:], np.zeros(12))
        mask = np.asarray(split["mask"]).reshape(-1, BR_LEN)
        assert np.all(mask[:, 0])  # every row, padding included, has a token to pool


def test_brackets_train_batch(brackets):
    b = jax.device_get(brackets.train_batch(brackets.train_data, jnp.int32(2)))
    again = jax.device_get(brackets.train_batch(brackets.train_data, jnp.int32(2)))
    other = jax.device_get(brackets.train_batch(brackets.train_data, jnp.int32(3)))
    np.testing.assert_array_equal(b["tokens"], again["tokens"])
    assert not np.array_equal(b["tokens"], other["tokens"])
    assert b["tokens"].shape == (16, BR_LEN) and b["targets"].shape == (16,)
    np.testing.assert_array_equal(b["mask"], b["tokens"] != PAD)
    np.testing.assert_array_equal(b["weights"], np.ones(16, np.float32))
    for row, y in zip(b["tokens"], b["targets"], strict=True):
        assert int(y) == int(_is_balanced(row[1:]))


@pytest.mark.parametrize(
    ("kwargs", "prefix"),
    [
        ({"seq_len": 2}, "task.seq_len:"),
        ({"num_examples": 10}, "task.num_examples:"),
        # only 8 distinct balanced sequences fit in 7 tokens: 50 positives cannot be distinct
        ({"num_examples": 100, "seq_len": 8}, "task.num_examples:"),
    ],
)
def test_brackets_bad_arguments(kwargs, prefix):
    with pytest.raises(ValueError) as exc:
        BracketsTask(**{"num_examples": 100, "seq_len": 8, "model": TINY_MODEL, **kwargs})
    _one_line_error(exc, prefix)


# ------------------------------------------------------------------------------------------------
# Untrained models: validation loss near log(num_classes)


def _modular():
    return ModularArithmeticTask(modulus=11, batch_size=16, model=TINY_MODEL)


def _brackets():
    return BracketsTask(num_examples=200, seq_len=BR_LEN, batch_size=16, model=TINY_MODEL)


@pytest.mark.parametrize("make", ["lm", "modular", "brackets"])
def test_untrained_validation_loss_is_near_uniform(lm_task, make):
    task = {"lm": lambda: lm_task, "modular": _modular, "brackets": _brackets}[make]()
    cfg = task.model_config
    num_classes = cfg.num_classes or cfg.vocab_size
    assert num_classes == {"lm": 256, "modular": 13, "brackets": 2}[make]
    popn = Population(task, "adam", "constant", mode="map")
    pop = popn.init(jax.random.key(0), [0], {"lr": [1e-3]})
    metrics = jax.device_get(popn.evaluate(pop, task.splits.val))
    loss = float(np.asarray(metrics["loss"])[0])
    acc = float(np.asarray(metrics["accuracy"])[0])
    assert math.isfinite(loss)
    assert abs(loss - math.log(num_classes)) < 0.5, (loss, math.log(num_classes))
    assert 0.0 <= acc <= 1.0
