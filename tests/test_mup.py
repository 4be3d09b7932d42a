"""µP, initialization schemes as per-member hyperparameters, and the µTransfer reproduction."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from flax import nnx

from jaxhpo import optim
from jaxhpo.config import Config, ConfigError, build, parse_override
from jaxhpo.models import Transformer, TransformerConfig, mup
from jaxhpo.population import Population
from jaxhpo.tasks import LanguageModelTask

ROOT = Path(__file__).resolve().parents[1]
CFG = TransformerConfig(
    vocab_size=32, max_len=8, num_layers=1, num_heads=2, d_model=32, d_ff=64, tie_embeddings=False
)
B, L = 2, 8


def _tokens(seed: int = 0) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (B, L), 0, CFG.vocab_size, dtype=jnp.int32)


def _params(model) -> nnx.State:
    return nnx.split(model)[1]


def _mutransfer():
    spec = importlib.util.spec_from_file_location("mutransfer", ROOT / "experiments/mutransfer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# 1. The µP model ------------------------------------------------------------------------------


def test_mup_at_base_width_is_the_standard_model():
    """width_mult = 1 with tied embeddings: every multiplier is 1 and the ``mup`` init is the
    ``normal`` one, so µP and SP are the same function with the same parameters."""
    sp = Transformer(dataclasses.replace(CFG, tie_embeddings=True), rngs=nnx.Rngs(0))
    mu_cfg = dataclasses.replace(CFG, tie_embeddings=True, parametrization="mup", mup_base_width=32)
    mu = Transformer(mu_cfg, rngs=nnx.Rngs(0))
    assert mu_cfg.width_mult == 1.0 and mu_cfg.scheme == "mup"
    chex.assert_trees_all_equal(jax.tree.leaves(_params(sp)), jax.tree.leaves(_params(mu)))
    chex.assert_trees_all_equal(sp(_tokens()), mu(_tokens()))


def test_mup_attention_scale_is_one_over_head_dim():
    """At width_mult 4 the attention logits are scaled by sqrt(base_head_dim) / head_dim, checked
    against attention computed by hand from the module's own weights."""
    cfg = dataclasses.replace(CFG, d_model=64, parametrization="mup", mup_base_width=16)
    assert cfg.width_mult == 4.0
    head_dim, base_head_dim = 32, 8
    assert cfg.attention_scale == pytest.approx(math.sqrt(base_head_dim) / head_dim)
    attn = Transformer(cfg, rngs=nnx.Rngs(1)).blocks[0].attn
    x = np.asarray(jax.random.normal(jax.random.key(2), (1, L, 64)))
    mask = np.ones((1, 1, L, L), bool)
    got = attn(jnp.asarray(x), jnp.asarray(mask), key=None, attn_dropout_rate=0.0)
    qkv = x @ np.asarray(attn.qkv.kernel[...]) + np.asarray(attn.qkv.bias[...])
    q, k, v = (qkv[0, :, i * 64 : (i + 1) * 64].reshape(L, 2, head_dim) for i in range(3))
    logits = np.einsum("qhd,khd->hqk", q, k) * math.sqrt(base_head_dim) / head_dim
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    y = np.einsum("hqk,khd->qhd", probs, v).reshape(L, 64)
    want = y @ np.asarray(attn.out.kernel[...]) + np.asarray(attn.out.bias[...])
    np.testing.assert_allclose(np.asarray(got[0]), want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("tied", [False, True])
def test_mup_readout_multiplier_and_zero_init(tied):
    cfg = dataclasses.replace(
        CFG, d_model=64, parametrization="mup", mup_base_width=16, tie_embeddings=tied
    )
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    if not tied:  # zero readout: logits are exactly zero at init
        assert float(jnp.abs(model.head.kernel[...]).max()) == 0.0
        assert float(jnp.abs(model(_tokens())).max()) == 0.0
        model.head.kernel[...] = jax.random.normal(jax.random.key(3), (64, 32))
    # the output multiplier is 1 / width_mult on whatever the readout computes
    x = jax.random.normal(jax.random.key(4), (B, L, 64))
    raw = model.token_embed.attend(x) if tied else model.head(x)
    np.testing.assert_allclose(model._readout(raw), raw / 4.0, rtol=1e-6)


def test_mup_metadata_tags_every_parameter():
    cfg = dataclasses.replace(CFG, parametrization="mup", mup_base_width=16)
    params = _params(Transformer(cfg, rngs=nnx.Rngs(0)))
    roles = {}
    for path, var in nnx.to_flat_state(params):
        meta = var.get_metadata()
        assert meta["mup_width_mult"] == 2.0
        roles[".".join(map(str, path))] = meta["mup_role"]
    hidden = {k for k, r in roles.items() if r == "hidden"}
    assert hidden == {
        f"blocks.0.{m}.kernel" for m in ("attn.qkv", "attn.out", "mlp.up", "mlp.down")
    }
    assert roles["head.kernel"] == "readout"
    assert roles["token_embed.embedding"] == roles["final_ln.scale"] == "vector"
    # the standard parametrization carries no tags
    sp = _params(Transformer(CFG, rngs=nnx.Rngs(0)))
    assert all("mup_role" not in v.get_metadata() for _, v in nnx.to_flat_state(sp))


@pytest.mark.parametrize(
    "optimizer,hidden,vector", [("adam", 0.25, 1.0), ("adamw", 0.25, 1.0), ("sgd", 1.0, 4.0)]
)
def test_lr_multipliers_reach_the_optimizer(optimizer, hidden, vector):
    """One step of make_optimizer's transform on a µP model (width_mult 4) equals optax's own
    optimizer times µP's per-layer multiplier: Adam hidden x 1/4, SGD vectors x 4."""
    cfg = dataclasses.replace(CFG, d_model=64, parametrization="mup", mup_base_width=16)
    graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))

    def loss(p):
        logits = nnx.merge(graphdef, p)(_tokens())
        return optax.softmax_cross_entropy_with_integer_labels(logits, _tokens(1)).mean()

    grads = jax.jit(jax.grad(loss))(params)
    tx = optim.make_optimizer(optimizer, "constant")
    state = optim.init_opt_state(tx, params, {"lr": 0.1, "weight_decay": 0.01})
    got, _ = tx.update(grads, state, params)
    ref_tx = {
        "adam": optax.chain(optax.add_decayed_weights(0.01), optax.adam(0.1)),
        "adamw": optax.adamw(0.1, weight_decay=0.01),
        "sgd": optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.1)),
    }[optimizer]
    plain = lambda t: jax.tree.map(np.asarray, nnx.to_pure_dict(t))  # noqa: E731
    want, _ = ref_tx.update(plain(grads), ref_tx.init(plain(params)), plain(params))
    flat_got = dict(nnx.to_flat_state(got))
    for path, var in nnx.to_flat_state(params):
        role = var.get_metadata()["mup_role"]
        mult = hidden if role == "hidden" else (vector if role == "vector" else vector)
        w = want
        for p in path:
            w = w[p]
        np.testing.assert_allclose(
            np.asarray(flat_got[path][...]), mult * np.asarray(w), rtol=2e-5, atol=1e-9
        )


def test_standard_model_update_is_exactly_optax():
    """Without µP tags the wrapper is an exact identity (no multiplication at all), and
    make_optimizer still matches optax.adamw."""
    _, params = nnx.split(Transformer(CFG, rngs=nnx.Rngs(0)))
    grads = jax.tree.map(lambda x: jnp.cos(3.0 * x) + 0.1, params)
    ref = optax.adamw(0.1, weight_decay=0.01)
    want, _ = ref.update(grads, ref.init(params), params)
    wrapped = mup.with_lr_multipliers(ref, "adamw")
    got, _ = wrapped.update(grads, wrapped.init(params), params)
    chex.assert_trees_all_equal(jax.tree.leaves(got), jax.tree.leaves(want))
    tx = optim.make_optimizer("adamw", "constant")
    state = optim.init_opt_state(tx, params, {"lr": 0.1, "weight_decay": 0.01})
    got, _ = tx.update(grads, state, params)
    chex.assert_trees_all_close(jax.tree.leaves(got), jax.tree.leaves(want), rtol=1e-5)


def test_mup_lr_through_the_population(lm_task):
    """End to end through Population (vmap over members, scan over steps): Adam's first step
    moves each entry by about lr (sign of the gradient), so hidden matrices of a width_mult-2
    µP model move by lr / 2 and embeddings by lr. (Tied embeddings: an untied µP readout is
    zero at init, so the first step would move nothing below it.)"""
    model = {"num_layers": 1, "num_heads": 2, "d_model": 32, "d_ff": 64}
    task = LanguageModelTask(
        max_bytes=200_000,
        seq_len=16,
        batch_size=4,
        eval_batches=1,
        model={**model, "parametrization": "mup", "mup_base_width": 16, "tie_embeddings": True},
    )
    population = Population(task, "adam", "constant", mode="vmap", devices=1)
    lr = 1e-3
    pop = population.init(jax.random.key(0), [0, 1], {"lr": lr, "eps": 1e-12})
    new, _ = population.train_segment(pop, task.train_data, 1)
    delta = jax.tree.map(lambda a, b: np.abs(np.asarray(a - b)), new.params, pop.params)
    flat = dict(nnx.to_flat_state(delta))

    def moved(path):
        d = flat[path][...]
        return float(np.median(d[d > 0]))

    assert moved(("blocks", 0, "mlp", "up", "kernel")) == pytest.approx(lr / 2, rel=1e-3)
    assert moved(("blocks", 0, "attn", "qkv", "kernel")) == pytest.approx(lr / 2, rel=1e-3)
    assert moved(("token_embed", "embedding")) == pytest.approx(lr, rel=1e-3)
    assert moved(("final_ln", "scale")) == pytest.approx(lr, rel=1e-3)


# 2. Initialization as a hyperparameter -----------------------------------------------------

WIDE = TransformerConfig(
    vocab_size=32,
    max_len=8,
    num_layers=1,
    num_heads=4,
    d_model=256,
    d_ff=1024,
    mup_base_width=64,
    tie_embeddings=False,
)


@pytest.mark.parametrize("scheme", mup.INIT_SCHEMES)
def test_init_std_matches_the_scheme(scheme):
    """The empirical std of the weight matrices matches the scheme's formula (scale 1.7,
    width_mult 4); the embedding is N(0, (0.02 c)^2) under every scheme."""
    cfg = dataclasses.replace(WIDE, init_scheme=scheme, init_scale=1.7)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    for layer, fan_in, fan_out in (
        (model.blocks[0].mlp.up, 256, 1024),
        (model.blocks[0].mlp.down, 1024, 256),
        (model.blocks[0].attn.qkv, 256, 768),
        (model.head, 256, 32),
    ):
        w = np.asarray(layer.kernel[...])
        want = mup.init_std(scheme, fan_in, fan_out, 1.7, 4.0)
        assert w.std() == pytest.approx(want, rel=0.03 if w.size > 50_000 else 0.08), layer
        assert abs(w.mean()) < 0.05 * want
    emb = np.asarray(model.token_embed.embedding[...])
    assert emb.std() == pytest.approx(0.02 * 1.7, rel=0.05)
    if scheme == "truncated_normal":
        assert np.abs(w).max() <= 2 * want / 0.87962566 + 1e-6  # truncated at 2 sigma
    if scheme in ("uniform", "xavier"):
        assert np.abs(w).max() <= math.sqrt(3) * want + 1e-6


def test_default_init_is_the_former_fixed_normal():
    key = jax.random.key(5)
    got = mup.kernel_init("normal", 1.0, 3.0)(key, (16, 8), jnp.float32)
    chex.assert_trees_all_equal(got, nnx.initializers.normal(0.02)(key, (16, 8), jnp.float32))


def test_vmapped_init_with_per_member_scheme_and_scale_equals_alone():
    """Five members, each with its own scheme (traced code, lax.switch) and scale, initialised
    under vmap: each equals the same member built alone with the static scheme."""
    cfg = dataclasses.replace(WIDE, d_model=32, d_ff=64, mup_base_width=16)
    keys = jax.random.split(jax.random.key(0), len(mup.INIT_SCHEMES))
    codes = jnp.arange(len(mup.INIT_SCHEMES), dtype=jnp.float32)
    scales = jnp.asarray([0.5, 1.0, 2.0, 0.7, 3.0], jnp.float32)

    def member(key, code, scale):
        return _params(
            Transformer(cfg, rngs=nnx.Rngs(params=key), init_scheme=code, init_scale=scale)
        )

    population = jax.jit(jax.vmap(member))(keys, codes, scales)
    for i, scheme in enumerate(mup.INIT_SCHEMES):
        alone_cfg = dataclasses.replace(cfg, init_scheme=scheme, init_scale=float(scales[i]))
        alone = _params(Transformer(alone_cfg, rngs=nnx.Rngs(params=keys[i])))
        got = jax.tree.map(lambda x, i=i: x[i], population)
        chex.assert_trees_all_close(got, alone, rtol=1e-6, atol=0.0)


def test_task_reads_init_hparams(lm_task):
    """Task.make_model(key, hp) takes the member's init_scheme/init_scale; the task's defaults
    come from the model config."""
    key = jax.random.key(7)
    hp = {"init_scheme": jnp.float32(3.0), "init_scale": jnp.float32(2.5)}
    got = _params(lm_task.make_model(key, hp))
    cfg = dataclasses.replace(lm_task.model_config, init_scheme="xavier", init_scale=2.5)
    want = _params(Transformer(cfg, rngs=nnx.Rngs(params=key)))
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=0.0)
    assert lm_task.hparam_defaults["init_scheme"] == 0.0  # normal
    mu = LanguageModelTask(
        max_bytes=200_000, seq_len=16, model={"parametrization": "mup", "init_scale": 0.5}
    )
    assert mu.hparam_defaults["init_scheme"] == mup.INIT_SCHEMES.index("mup")
    assert mu.hparam_defaults["init_scale"] == 0.5


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.parametrization=mu", "model.parametrization: unknown 'mu'"),
        ("model.init_scheme=he", "model.init_scheme: unknown 'he'"),
        ("model.mup_base_width=0", "model.mup_base_width: must be >= 1"),
        ("model.init_scale=-1", "model.init_scale: must be a finite number >= 0"),
    ],
)
def test_bad_mup_config_is_one_line_error(override, message):
    """Values are checked when the config is built, names (µP's registries) by
    jaxhpo.run.validate.check_config, both before anything else."""
    from jaxhpo.run.validate import check_config

    with pytest.raises(ConfigError, match=message):
        check_config(build(Config(), parse_override(override)))


def test_lm_mup_preset_builds_a_mup_population():
    """``jaxhpo run lm-mup`` (here: its config and prepare(), nothing trained) builds a µP LM
    whose parameters carry the tags the optimizer reads."""
    from conftest import TINY_LM_OVERRIDES

    from jaxhpo.cli import load_config
    from jaxhpo.experiment import prepare

    cfg = load_config("lm-mup", [*TINY_LM_OVERRIDES, "model.mup_base_width=8"])
    prepared = prepare(cfg)
    model_cfg = prepared.task.model_config
    assert model_cfg.parametrization == "mup" and model_cfg.width_mult == 2.0
    assert model_cfg.scheme == "mup" and not model_cfg.tie_embeddings
    assert prepared.hparams["init_scheme"][0] == mup.INIT_SCHEMES.index("mup")
    abstract = nnx.eval_shape(lambda: prepared.task.make_model(jax.random.key(0)))
    kernel = abstract.blocks[0].mlp.up.kernel
    assert kernel.get_metadata()["mup_role"] == "hidden"


@pytest.mark.slow
def test_mutransfer_workflow_from_the_cli(tmp_path):
    """``jaxhpo run lm-mup`` tunes at a narrow width; ``strategy.name=replay`` with the narrow
    run directory trains a wider µP model with the narrow run's best hyperparameters."""
    from conftest import TINY_LM_OVERRIDES

    from jaxhpo import cli
    from jaxhpo.experiment import run

    common = [*TINY_LM_OVERRIDES, "train.steps=20", "train.segment_steps=10"]
    common += ["train.checkpoint_every=0", "model.mup_base_width=16"]
    narrow_out = tmp_path / "narrow"
    args = ["run", "lm-mup", *common, "population.size=3", "--out", str(narrow_out), "--quiet"]
    assert cli.main(args) == 0
    (narrow_dir,) = narrow_out.iterdir()
    members = pd.read_csv(narrow_dir / "members.csv")
    best = members.loc[members["val_loss"].idxmin()]
    wide_cfg = cli.load_config(
        "lm-mup",
        [
            *common,
            "model.d_model=32",
            "model.d_ff=64",
            "strategy.name=replay",
            f"strategy.schedule={narrow_dir}",
            "population.size=2",
            f"out_dir={tmp_path / 'wide'}",
        ],
    )
    assert wide_cfg.model.parametrization == "mup"
    wide = run(wide_cfg, quiet=True)
    for name in ("lr", "warmup_steps", "weight_decay"):
        np.testing.assert_allclose(wide.members[name], best[name], rtol=1e-6)
    kernel = wide.state.params["blocks"][0]["mlp"]["up"]["kernel"]
    assert kernel.shape == (2, 32, 64)  # two members of the wide model
    assert kernel.get_metadata()["mup_width_mult"] == 2.0
    assert np.all(np.isfinite(wide.members["val_loss"]))


# 3. µTransfer ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_coordinate_check_transformer():
    """After 5 Adam steps the change of the Transformer's logits grows with width under SP
    (x >= sqrt(4) from width 64 to 256) and stays flat under µP."""
    mt = _mutransfer()
    widths = (64, 256)
    sp = mt.coord_check_transformer(widths, "standard")
    mu = mt.coord_check_transformer(widths, "mup")
    assert mt.coord_growth(sp) >= 2.0, sp
    assert 0.67 <= mt.coord_growth(mu) <= 1.5, mu


@pytest.mark.slow
def test_coordinate_check_mlp():
    """The MLP's logit change after 5 Adam steps: x>=sqrt(8) from width 64 to 512 under SP, flat
    under µP."""
    mt = _mutransfer()
    sp = mt.coord_check_mlp((64, 512), "standard")
    mu = mt.coord_check_mlp((64, 512), "mup")
    assert mt.coord_growth(sp) >= math.sqrt(8), sp
    assert 0.67 <= mt.coord_growth(mu) <= 1.5, mu


@pytest.mark.slow
def test_reduced_sweep_best_lr_drifts_under_sp_only():
    """The reduced µTransfer sweep (widths 64 and 256, 1-octave grid, 2 seeds, 150 steps; each
    width one population): SP's best lr moves by >= 2 octaves, µP's by <= 1."""
    mt = _mutransfer()
    q = mt.QUICK
    result = mt.run_sweeps(
        q["widths"], q["grid"], seeds=q["seeds"], steps=q["steps"], batch_size=q["batch_size"]
    )
    assert mt.drift(result, "standard") >= 2.0, mt.table(result)
    assert mt.drift(result, "mup") <= 1.0, mt.table(result)
    # At the smallest lr the whole SP curve has moved (the wide model trains much faster), while
    # the µP curves lie on each other.
    sp, mu = result["standard"], result["mup"]
    assert sp[256]["loss"][0].mean() < sp[64]["loss"][0].mean() - 0.3
    assert abs(mu[256]["loss"][0].mean() - mu[64]["loss"][0].mean()) < 0.2


@pytest.mark.slow
def test_quick_reproduction_writes_the_run_directory(tmp_path):
    """``jaxhpo run experiments/mutransfer.py --quick``: claims, table, sweep and plot."""
    from jaxhpo import cli

    assert (
        cli.main(
            ["run", str(ROOT / "experiments/mutransfer.py"), "--quick", "--out", str(tmp_path)]
        )
        == 0
    )
    import json

    info = json.loads((tmp_path / "results.json").read_text())
    assert info["widths"] == [64, 256]
    assert info["standard_drift_octaves"] >= 2.0 and info["mup_drift_octaves"] <= 1.0
    for name in ("sweep.csv", "best_lr.md", "mutransfer.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
def test_mutransfer_full_reproduction(tmp_path):
    """The full claim: widths 64..512, half-octave grid, 3 seeds, 300 steps (about 15 min on 2
    CPU cores, 3 min on one H100)."""
    mt = _mutransfer()
    assert mt.main(["--out", str(tmp_path)]) == 0


def test_population_members_get_their_own_init_scheme_and_scale():
    """``init_scheme`` / ``init_scale`` in the population's hyperparameters reach each member's
    initialisation (traced, one program): member i equals the model built alone with its key."""
    from flax import nnx

    from jaxhpo.population import MEMBER_STREAM, Population
    from jaxhpo.tasks import LanguageModelTask

    task = LanguageModelTask(
        max_bytes=100_000,
        seq_len=16,
        batch_size=4,
        eval_batches=1,
        model={"num_layers": 1, "num_heads": 2, "d_model": 16, "d_ff": 32},
    )
    scheme, scale = np.array([0.0, 3.0, 4.0]), np.array([1.0, 2.0, 0.5])
    popn = Population(
        task, "adamw", "constant", mode="vmap", searched=("init_scheme", "init_scale")
    )
    root = jax.random.key(7)
    pop = popn.init(root, np.arange(3), {"init_scheme": scheme, "init_scale": scale})
    for i in range(3):
        member_key = jax.random.fold_in(jax.random.fold_in(root, MEMBER_STREAM), i)
        init_key, _ = jax.random.split(member_key)
        hp = {"init_scheme": jnp.float32(scheme[i]), "init_scale": jnp.float32(scale[i])}
        _, alone = nnx.split(task.make_model(init_key, hp))
        for a, b in zip(jax.tree.leaves(pop.params), jax.tree.leaves(alone), strict=True):
            np.testing.assert_allclose(np.asarray(a)[i], np.asarray(b), rtol=1e-6, atol=1e-7)
    # the schemes differ: member 1 (xavier, x2) is not member 0 (normal)
    kernels = [x for x in jax.tree.leaves(pop.params) if x.ndim == 3]
    assert not np.allclose(np.std(np.asarray(kernels[0])[0]), np.std(np.asarray(kernels[0])[1]))
