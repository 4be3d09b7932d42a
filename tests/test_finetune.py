"""BERT-style pretrain -> fine-tune: masked-LM masking, epoch semantics of the fine-tuning task,
pretrained weights saved by a run and loaded into every member, bad ``task.pretrained``, and the
round trip from the command line (``jaxhpo run mlm-pretrain`` then ``jaxhpo run bert-finetune``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_MODEL
from flax import nnx

from jaxhpo import cli, pretrained
from jaxhpo.population import Population
from jaxhpo.tasks.finetune import FinetuneTask, corrupt_windows
from jaxhpo.tasks.mlm import CLS, MASK, VOCAB_SIZE, MaskedLanguageModelTask, bert_mask

ROOT = Path(__file__).resolve().parents[1]
TINY_DATA = {"max_bytes": 200_000, "seq_len": 16}
#: The tiny encoder and data as CLI overrides, for both presets.
TINY_OVERRIDES = [
    "task.seq_len=16",
    "task.max_bytes=200000",
    "task.eval_batches=2",
    *(f"model.{k}={v}" for k, v in TINY_MODEL.items()),
]


@pytest.fixture(scope="module")
def ft_task() -> FinetuneTask:
    return FinetuneTask(
        **TINY_DATA, batch_size=32, eval_batches=2, num_train=128, model=dict(TINY_MODEL)
    )


# -- masked LM ---------------------------------------------------------------------------------


def test_bert_masking_statistics():
    """15% of the non-[CLS] positions are selected; of those 80% become [MASK], 10% a random
    byte, 10% stay; unselected positions are unchanged; the weights are the selected positions."""
    rng = np.random.default_rng(0)
    body = rng.integers(0, 256, (4096, 63))
    tokens = jnp.asarray(np.concatenate([np.full((4096, 1), CLS), body], axis=1), jnp.int32)
    special = jnp.zeros(tokens.shape, bool).at[:, 0].set(True)
    inputs, weights = bert_mask(jax.random.key(1), tokens, 0.15, special)
    inputs, weights, tokens = map(np.asarray, (inputs, weights, tokens))
    sel = weights == 1.0
    assert set(np.unique(weights)) == {0.0, 1.0}
    assert not sel[:, 0].any() and np.all(inputs[:, 0] == CLS)
    n = sel.sum()
    assert abs(n / sel[:, 1:].size - 0.15) < 0.005
    np.testing.assert_array_equal(inputs[~sel], tokens[~sel])
    masked = inputs[sel] == MASK
    kept = inputs[sel] == tokens[sel]
    replaced = ~masked & ~kept
    assert abs(masked.mean() - 0.8) < 0.01
    # a random byte equals the original one time in 256: kept = 0.1 + 0.1 / 256
    assert abs(kept.mean() - (0.1 + 0.1 / 256)) < 0.01
    assert abs(replaced.mean() - 0.1 * 255 / 256) < 0.01
    assert np.all(inputs[sel][replaced] < 256)  # random replacements are bytes, not specials


def test_mlm_task_batches_are_masked_corpus_windows():
    task = MaskedLanguageModelTask(**TINY_DATA, batch_size=16, eval_batches=2, model=TINY_MODEL)
    assert task.model_config.vocab_size == VOCAB_SIZE and not task.model_config.causal
    corpus = bytes(np.asarray(task.train_data["corpus"]))
    b = task.train_batch(task.train_data, jnp.int32(7))
    again = task.train_batch(task.train_data, jnp.int32(7))
    other = task.train_batch(task.train_data, jnp.int32(8))
    for k in b:
        np.testing.assert_array_equal(b[k], again[k])  # addressed by the step
    assert not np.array_equal(b["targets"], other["targets"])
    targets, tokens, w = (np.asarray(b[k]) for k in ("targets", "tokens", "weights"))
    assert np.all(targets[:, 0] == CLS) and np.all(w[:, 0] == 0)
    for row in targets[:, 1:]:
        assert bytes(row.astype(np.uint8).tolist()) in corpus  # a real window of the corpus
    np.testing.assert_array_equal(tokens[w == 0], targets[w == 0])
    assert 0.05 < w.mean() < 0.3
    val = task.splits.val
    assert val["tokens"].shape == (2, 16, 16) and float(val["weights"].sum()) > 0
    # the loss counts the selected positions only: changing an unselected target changes nothing
    model = task.make_model(jax.random.key(0))
    hp = {"dropout": 0.0, "attn_dropout": 0.0, "label_smoothing": 0.0}
    loss_fn = jax.jit(lambda batch: task.loss(model, batch, hp, jax.random.key(1))[0])
    t2 = np.where(w == 0, (targets + 1) % 256, targets)
    loss, loss2 = loss_fn(b), loss_fn({**b, "targets": jnp.asarray(t2)})
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)


def test_mlm_bad_mask_prob_names_the_field():
    with pytest.raises(ValueError, match=r"^task\.mask_prob: must lie in \(0, 1\)"):
        MaskedLanguageModelTask(**TINY_DATA, mask_prob=1.0, model=TINY_MODEL)


# -- fine-tuning data --------------------------------------------------------------------------


def test_corruption_replaces_exactly_k_bytes_from_the_source():
    rng = np.random.default_rng(0)
    windows = rng.integers(97, 100, (200, 20)).astype(np.uint8)
    source = np.frombuffer(b"abcabcxyz", np.uint8)
    out = corrupt_windows(rng, windows, source, 3)
    diff = out != windows
    assert np.all(diff.sum(1) == 3)
    assert set(np.unique(out[diff])) <= set(source.tolist())


def test_finetune_splits_balanced(ft_task):
    labels = np.asarray(ft_task.train_data["labels"])
    assert labels.shape == (128,) and labels.sum() == 64
    assert ft_task.epoch_size == 128 and ft_task.corrupted == max(
        1, round(ft_task.corrupt_frac * 15)
    )
    val = ft_task.splits.val
    assert val["tokens"].shape == (2, 32, 16) and np.all(np.asarray(val["tokens"])[..., 0] == CLS)
    assert float(np.asarray(val["targets"]).mean()) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("b", [16, 32, 24])
def test_train_batch_epoch_semantics(ft_task, b):
    """A member with batch size b sees every training example exactly once per epoch, in a new
    order each epoch; rows 0..b-1 of the batch are its batch (rows past b: its next examples)."""
    N, B = ft_task.epoch_size, ft_task.batch_size
    key = ft_task.train_data["key"]
    steps = math.ceil(2 * N / b) + 1
    rows = [np.asarray(ft_task.epoch_rows(key, jnp.int32(s), jnp.int32(b))) for s in range(steps)]
    seen = np.concatenate([r[:b] for r in rows])
    for e in range(2):
        epoch = seen[e * N : (e + 1) * N]
        np.testing.assert_array_equal(np.sort(epoch), np.arange(N))  # each example once
    assert not np.array_equal(seen[:N], seen[N : 2 * N])  # reshuffled each epoch
    for s in range(steps - 1):  # rows past b are the member's next examples
        np.testing.assert_array_equal(rows[s][b:], seen[(s + 1) * b : s * b + B])
    batch = ft_task.train_batch(ft_task.train_data, jnp.int32(3), None, member_batch=jnp.int32(b))
    np.testing.assert_array_equal(batch["tokens"], ft_task.train_data["tokens"][rows[3]])
    np.testing.assert_array_equal(batch["targets"], ft_task.train_data["labels"][rows[3]])
    # without member_batch: the task's batch size
    full = ft_task.train_batch(ft_task.train_data, jnp.int32(2))
    idx = np.asarray(ft_task.epoch_rows(key, jnp.int32(2), jnp.int32(B)))
    np.testing.assert_array_equal(full["targets"], ft_task.train_data["labels"][idx])


# -- pretrained weights ------------------------------------------------------------------------


def _mlm_weights(tmp_path: Path, model: dict, seed: int = 3) -> tuple[Path, dict]:
    """Random encoder weights of an MLM model saved with :func:`pretrained.save`."""
    mlm = MaskedLanguageModelTask(**TINY_DATA, batch_size=8, eval_batches=1, model=model)
    _, state = nnx.split(mlm.make_model(jax.random.key(seed)))
    params = pretrained.flat_params(state)
    info = {"model": {"vocab_size": VOCAB_SIZE, **model}, "member": 0, "metric": "val_loss"}
    return pretrained.save(tmp_path / "pre", params, info), params


def test_pretrained_encoder_and_fresh_head(tmp_path):
    folder, saved = _mlm_weights(tmp_path, dict(TINY_MODEL))
    params, info = pretrained.load(folder)
    assert set(params) == set(saved) and info["member"] == 0
    task = FinetuneTask(
        **TINY_DATA,
        batch_size=8,
        eval_batches=1,
        num_train=32,
        pretrained=str(folder),
        model=dict(TINY_MODEL),
    )
    scratch = FinetuneTask(
        **TINY_DATA, batch_size=8, eval_batches=1, num_train=32, model=dict(TINY_MODEL)
    )
    pop = Population(task, "adamw", "warmup_linear", mode="map")
    state = pop.init(jax.random.key(0), np.arange(3), {})
    ref = Population(scratch, "adamw", "warmup_linear", mode="map").init(
        jax.random.key(0), np.arange(3), {}
    )
    got = pretrained.flat_params(jax.tree.map(lambda x: x[1], state.params))
    fresh = pretrained.flat_params(jax.tree.map(lambda x: x[1], ref.params))
    encoder = [k for k in got if not k.startswith("head/")]
    assert len(encoder) == len(saved)  # tied embeddings: the MLM has no separate head
    for k in encoder:
        for m in range(3):  # every member starts from the pretrained encoder
            leaf = np.asarray(
                pretrained.flat_params(jax.tree.map(lambda x, m=m: x[m], state.params))[k]
            )
            np.testing.assert_array_equal(leaf, saved[k])
    for k in ("head/kernel", "head/bias"):  # the head: the member's own fresh init
        np.testing.assert_array_equal(got[k], fresh[k])
    heads = np.asarray(state.params["head"]["kernel"])
    assert not np.allclose(heads[0], heads[1])


def test_save_best_writes_the_best_members_parameters(tmp_path):
    """``save_best`` picks the final member with the best finite validation value (diverged and
    NaN members excluded) and writes exactly its parameters."""
    task = MaskedLanguageModelTask(**TINY_DATA, batch_size=8, eval_batches=1, model=TINY_MODEL)
    population = Population(task, "adamw", "warmup_cosine", mode="map")
    pop = population.init(jax.random.key(0), np.array([10, 11, 12, 13]), {})
    members = pd.DataFrame(
        {
            "member": [10, 11, 12, 13],
            "val_loss": [2.0, 0.5, np.nan, 1.5],
            "diverged": [False, True, False, False],
        }
    )
    run_dir = tmp_path / "run"
    folder = pretrained.save_best(run_dir, task, pop, members, "loss", maximize=False)
    params, info = pretrained.load(run_dir)  # a run directory resolves to its pretrained/
    assert folder == (run_dir / "pretrained").absolute()
    assert info["member"] == 13 and info["value"] == 1.5 and info["metric"] == "val_loss"
    assert info["model"]["vocab_size"] == VOCAB_SIZE and info["task"]["name"] == "mlm"
    want = pretrained.flat_params(jax.tree.map(lambda x: x[3], pop.params))
    assert set(params) == set(want)
    for k in want:
        np.testing.assert_array_equal(params[k], want[k])
    best_acc = pretrained.save_best(
        tmp_path / "acc", task, pop, members.assign(val_loss=[0.1, 0.9, 0.2, 0.3]), "loss", True
    )
    assert json.loads((best_acc / "pretrained.json").read_text())["member"] == 13  # 11 diverged


def test_bad_pretrained_is_one_line_naming_the_field(tmp_path):
    common = dict(TINY_DATA, batch_size=8, eval_batches=1, num_train=32)
    with pytest.raises(ValueError, match=r"^task\.pretrained: path does not exist"):
        FinetuneTask(**common, pretrained=str(tmp_path / "nope"), model=dict(TINY_MODEL))
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ValueError, match=r"^task\.pretrained: no pretrained weights in .*save_best"
    ):
        FinetuneTask(**common, pretrained=str(tmp_path / "empty"), model=dict(TINY_MODEL))
    folder, _ = _mlm_weights(tmp_path, dict(TINY_MODEL))
    wider = {**TINY_MODEL, "d_model": 32}
    with pytest.raises(ValueError, match=r"^task\.pretrained: '.*' has shape .* in the pretrained"):
        FinetuneTask(**common, pretrained=str(folder), model=wider)
    heads = {**TINY_MODEL, "num_heads": 1}
    with pytest.raises(ValueError, match=r"^task\.pretrained: the pretrained model has num_heads"):
        FinetuneTask(**common, pretrained=str(folder), model=heads)
    deeper = {**TINY_MODEL, "num_layers": 2}
    with pytest.raises(ValueError, match=r"^task\.pretrained: the pretrained weights have no"):
        FinetuneTask(**common, pretrained=str(folder), model=deeper)


def test_bad_pretrained_from_the_cli(tmp_path, capsys):
    code = cli.main(
        [
            "run",
            "bert-finetune",
            f"task.pretrained={tmp_path / 'missing'}",
            *TINY_OVERRIDES,
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("jaxhpo: error: task.pretrained: path does not exist")


# -- the command line, end to end --------------------------------------------------------------


@pytest.mark.slow
def test_cli_pretrain_then_finetune(tmp_path):
    """``jaxhpo run mlm-pretrain ... train.save_best=true`` saves the best member;
    ``jaxhpo run bert-finetune task.pretrained=RUN_DIR`` fine-tunes the 3 x 2 x 3 grid from it,
    each member taking exactly ceil(epochs * N / b) steps."""
    pre_out, ft_out = tmp_path / "pre", tmp_path / "ft"
    args = [
        "run",
        "mlm-pretrain",
        *TINY_OVERRIDES,
        "task.batch_size=8",
        "train.steps=10",
        "train.segment_steps=5",
        "train.checkpoint_every=0",
        "train.save_best=true",
        "--out",
        str(pre_out),
        "--quiet",
    ]
    assert cli.main(args) == 0
    (pre_dir,) = pre_out.iterdir()
    members = pd.read_csv(pre_dir / "members.csv")
    info = json.loads((pre_dir / "pretrained" / "pretrained.json").read_text())
    assert info["member"] == int(members.loc[members["val_loss"].idxmin(), "member"])
    assert info["value"] == pytest.approx(members["val_loss"].min())
    assert info["model"]["d_model"] == TINY_MODEL["d_model"] and not info["model"]["causal"]
    N = 16
    args = [
        "run",
        "bert-finetune",
        f"task.pretrained={pre_dir}",
        *TINY_OVERRIDES,
        "task.batch_size=8",
        f"task.num_train={N}",
        "space.batch_size=[4, 8]",
        "train.steps=16",
        "train.segment_steps=8",
        "train.checkpoint_every=0",
        "--out",
        str(ft_out),
        "--quiet",
    ]
    assert cli.main(args) == 0
    (ft_dir,) = ft_out.iterdir()
    run_info = json.loads((ft_dir / "run.json").read_text())
    assert run_info["task"]["pretrained_member"] == info["member"]
    ft = pd.read_csv(ft_dir / "members.csv")
    assert len(ft) == 18 and np.all(np.isfinite(ft["val_accuracy"]))
    expected = np.ceil(ft["epochs"] * N / ft["batch_size"]).astype(int)
    np.testing.assert_array_equal(ft["steps"], expected)  # e.g. epochs 2, b 4: 8 steps
    assert run_info["member_steps"] == int(expected.sum())


@pytest.mark.slow
def test_bert_finetune_reproduction(tmp_path):
    """The full reproduction (pretraining, grid, random search, PBT, scratch) and its claim."""
    code = cli.main(["run", str(ROOT / "experiments/bert_finetune.py"), "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert code == 0, results.get("verdict_detail")
    for name in ("results.md", "bert_finetune.png"):
        assert (tmp_path / name).stat().st_size > 0
