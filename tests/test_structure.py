"""Structural hyperparameters as a masked super-model: depth, heads and MLP width per member."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_LM_OVERRIDES
from flax import nnx

from jaxhpo.cli import main
from jaxhpo.models import Transformer, TransformerConfig
from jaxhpo.population import Population
from jaxhpo.tasks import LanguageModelTask

BIG = TransformerConfig(vocab_size=32, max_len=8, num_layers=3, num_heads=2, d_model=16, d_ff=32)
SMALL = dataclasses.replace(BIG, num_layers=2, d_ff=12)


def test_masked_super_model_computes_the_smaller_model():
    """With depth=2 and ff_width=12 the 3-layer, d_ff=32 model computes exactly the 2-layer,
    d_ff=12 model whose weights are its first blocks and first hidden units."""
    big, small = Transformer(BIG, rngs=nnx.Rngs(0)), Transformer(SMALL, rngs=nnx.Rngs(1))
    gdef, state = nnx.split(big)
    b, s = nnx.to_pure_dict(state), nnx.to_pure_dict(nnx.split(small)[1])
    for name in ("token_embed", "pos_embed", "final_ln"):
        b[name] = s[name]
    for i in range(2):
        bb, sb = b["blocks"][i], s["blocks"][i]
        for name in ("ln_attn", "ln_mlp", "attn"):
            bb[name] = sb[name]
        up, down = bb["mlp"]["up"], bb["mlp"]["down"]
        up["kernel"] = jnp.asarray(up["kernel"]).at[:, :12].set(sb["mlp"]["up"]["kernel"])
        up["bias"] = jnp.asarray(up["bias"]).at[:12].set(sb["mlp"]["up"]["bias"])
        down["kernel"] = jnp.asarray(down["kernel"]).at[:12].set(sb["mlp"]["down"]["kernel"])
        down["bias"] = sb["mlp"]["down"]["bias"]
    nnx.replace_by_pure_dict(state, b)
    big = nnx.merge(gdef, state)
    tokens = jax.random.randint(jax.random.key(2), (3, 8), 0, 32)
    want = small(tokens)
    got = big(tokens, depth=jnp.float32(2), ff_width=jnp.float32(12))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(big(tokens), want, atol=1e-3)  # unmasked, it is another model


def test_masked_heads_do_not_contribute():
    model = Transformer(BIG, rngs=nnx.Rngs(0))
    gdef, state = nnx.split(model)
    tokens = jax.random.randint(jax.random.key(2), (2, 8), 0, 32)
    base = nnx.merge(gdef, state)(tokens, heads=jnp.float32(1))

    def perturbed(head):
        d = nnx.to_pure_dict(state)
        k = np.array(d["blocks"][0]["attn"]["qkv"]["kernel"]).reshape(16, 3, 2, 8)
        # q, k and v of one head (noise: a constant would vanish on LayerNorm's zero mean)
        k[:, :, head] += np.random.default_rng(0).normal(size=k[:, :, head].shape)
        d["blocks"][0]["attn"]["qkv"]["kernel"] = jnp.asarray(k.reshape(16, 48))
        st = jax.tree.map(lambda x: x, state)
        nnx.replace_by_pure_dict(st, d)
        return nnx.merge(gdef, st)(tokens, heads=jnp.float32(1))

    np.testing.assert_array_equal(perturbed(1), base)  # exactly nothing: the head is zeroed
    assert np.abs(perturbed(0) - base).max() > 1e-4


def test_population_members_of_different_depth_share_one_program():
    """Member 0 (depth 1 of 2) never changes its second block (zero gradient, no weight decay);
    member 1 (depth 2) trains it. One population, one compiled segment."""
    task = LanguageModelTask(
        max_bytes=100_000,
        seq_len=16,
        batch_size=4,
        eval_batches=1,
        model={"num_layers": 2, "num_heads": 2, "d_model": 16, "d_ff": 32},
    )
    popn = Population(task, "momentum", "constant", mode="vmap", searched=("depth",))
    pop0 = popn.init(jax.random.key(0), np.arange(2), {"lr": 0.1, "depth": np.array([1, 2])})
    pop, losses = popn.train_segment(pop0, task.train_data, 5)
    before = pop0.params["blocks"][1]["mlp"]["up"]["kernel"][...]
    after = pop.params["blocks"][1]["mlp"]["up"]["kernel"][...]
    np.testing.assert_array_equal(np.asarray(after)[0], np.asarray(before)[0])
    assert not np.allclose(np.asarray(after)[1], np.asarray(before)[1])
    assert popn.trace_counts["segment"] == 1 and np.isfinite(np.asarray(losses)).all()


@pytest.mark.slow
def test_cli_pbt_searches_structure(tmp_path, capsys):
    rc = main(
        [
            "run",
            "lm-pbt",
            *TINY_LM_OVERRIDES,
            "model.num_layers=2",
            "space.depth=int(1, 2)",
            "space.ff_width=[8, 16, 32]",
            "population.size=4",
            "train.steps=20",
            "train.segment_steps=5",
            "strategy.ready_steps=5",
            f"out_dir={tmp_path}",
            "--quiet",
        ]
    )
    assert rc == 0
    (run,) = tmp_path.iterdir()
    members = pd.read_csv(run / "members.csv")
    assert set(members["ff_width"]) <= {8, 16, 32} and set(members["depth"]) <= {1, 2}
    bad = ["run", "lm-random", "model.num_layers=2", "space.depth=int(1, 5)"]
    rc = main([*bad, f"out_dir={tmp_path / 'bad'}", "--quiet"])
    assert rc == 2
    assert "space.depth: values must lie in [1, 2]" in capsys.readouterr().err
