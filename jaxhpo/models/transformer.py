"""A Flax NNX Transformer written for one model, to be vmapped into a population.

The model's forward pass is a pure function of its parameters and its arguments: dropout
randomness comes from an explicit ``key`` argument (not from ``nnx.Rngs`` state) and the
dropout rates are ordinary (possibly traced) float arrays. The population trainer can
therefore do::

    graphdef, state = nnx.split(model)

    def member_forward(state, tokens, key, rate):
        return nnx.merge(graphdef, state)(tokens, key=key, dropout_rate=rate)

    jax.jit(jax.vmap(member_forward))(stacked_state, tokens, keys, rates)

Shape suffixes used in names: B batch, L sequence length, D d_model, H heads, K head dim,
F d_ff, V vocabulary, C classes.

Parametrization (``TransformerConfig.parametrization``): ``standard`` or ``mup`` (µP, Yang et al.
2022, arXiv:2203.03466; see :mod:`jaxhpo.models.mup` for the table). Under ``mup`` the attention
logits are scaled by ``1/sqrt(head_dim * width_mult)`` (``∝ 1/head_dim``), the readout is
multiplied by ``1/width_mult`` and (untied) initialised to zero, and every parameter carries
``mup_role`` metadata from which :func:`jaxhpo.models.mup.with_lr_multipliers` (applied in
:func:`jaxhpo.optim.make_optimizer`) scales its learning rate. ``width_mult = d_model /
mup_base_width``; the hidden sizes ``d_ff`` and ``head_dim`` are assumed to grow in proportion
to ``d_model`` (a fixed ``d_ff / d_model`` ratio and a fixed number of heads).

Initialization (``init_scheme``, ``init_scale``): a scheme from
:data:`jaxhpo.models.mup.INIT_SCHEMES` for every weight matrix (the readout under ``mup``
excepted) and a multiplier for every weight matrix and embedding. Both may be overridden per
member with (traced) arrays: ``Transformer(config, rngs=..., init_scheme=code,
init_scale=c)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxhpo.models import mup
from jaxhpo.models.transformer_config import TransformerConfig

__all__ = ["MLP", "Block", "MultiHeadSelfAttention", "Transformer", "TransformerConfig", "dropout"]


@dataclasses.dataclass(frozen=True)
class _Inits:
    """The initializers and µP metadata of one model (scheme/scale may be traced)."""

    scheme: str | jax.Array
    scale: float | jax.Array
    width_mult: float
    is_mup: bool

    def _meta(self, role: str) -> dict:
        return mup.metadata(role, self.width_mult, self.is_mup)

    def linear(self, d_in: int, d_out: int, dtype, rngs: nnx.Rngs, role: str = "hidden"):
        """A Linear layer: a hidden matrix, or the readout (zero init under µP)."""
        if role == "readout" and self.is_mup:
            init = mup.zeros_init
        else:
            init = mup.kernel_init(self.scheme, self.scale, self.width_mult)
        return nnx.Linear(
            d_in,
            d_out,
            kernel_init=init,
            dtype=dtype,
            rngs=rngs,
            kernel_metadata=self._meta(role),
            bias_metadata=self._meta("vector"),
        )

    def embed(self, num: int, d: int, dtype, rngs: nnx.Rngs):
        return nnx.Embed(
            num,
            d,
            embedding_init=mup.embed_init(self.scale),
            dtype=dtype,
            rngs=rngs,
            embedding_metadata=self._meta("vector"),
        )

    def layer_norm(self, d: int, dtype, rngs: nnx.Rngs):
        return nnx.LayerNorm(
            d,
            dtype=dtype,
            rngs=rngs,
            scale_metadata=self._meta("vector"),
            bias_metadata=self._meta("vector"),
        )


def dropout(x: jax.Array, rate: jax.Array | float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout whose rate may be a traced array.

    Args:
        x: Input of any shape.
        rate: Drop probability in [0, 1), a Python float or a (traced) scalar array.
        key: PRNG key; None means deterministic (returns ``x``).

    Returns:
        ``x`` with entries zeroed with probability ``rate`` and the survivors scaled by
        ``1 / (1 - rate)``. Rate 0 returns exactly ``x``.
    """
    if key is None or (isinstance(rate, int | float) and rate == 0):
        return x  # a rate fixed at 0 for the run (a Python constant) draws no random bits
    keep = 1.0 - jnp.asarray(rate, dtype=jnp.float32)
    # uniform < 1.0 always holds, so rate 0 keeps everything and divides by exactly 1.
    keep_mask = jax.random.bernoulli(key, keep, x.shape)
    return jnp.where(keep_mask, x / keep.astype(x.dtype), jnp.zeros_like(x))


def _full(size: jax.Array | float | None, full: int) -> bool:
    """``size`` is a Python number (a constant of the program) at or above ``full``."""
    return isinstance(size, int | float) and size >= full


def _split(key: jax.Array | None, num: int) -> list[jax.Array | None]:
    """Splits ``key`` into ``num`` keys, or returns ``num`` Nones when ``key`` is None."""
    if key is None:
        return [None] * num
    return list(jax.random.split(key, num))


class MultiHeadSelfAttention(nnx.Module):
    """Multi-head self-attention with a traced attention-probability dropout rate."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs, inits: _Inits):
        """Builds the fused qkv and output projections.

        Args:
            config: Model config.
            rngs: Parameter initialisation RNGs.
            inits: The model's initializers.
        """
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.scale = config.attention_scale
        dtype = jnp.dtype(config.dtype)
        self.qkv = inits.linear(config.d_model, 3 * config.d_model, dtype, rngs)
        self.out = inits.linear(config.d_model, config.d_model, dtype, rngs)

    def __call__(
        self,
        x_BxLxD: jax.Array,
        mask_Bx1xLxL: jax.Array,
        *,
        key: jax.Array | None,
        attn_dropout_rate: jax.Array | float,
        heads: jax.Array | None = None,
    ) -> jax.Array:
        """Attends.

        Args:
            x_BxLxD: Input activations.
            mask_Bx1xLxL: Bool, True where query i may attend to key j (broadcast over
                heads; the batch axis may be 1).
            key: PRNG key for attention-probability dropout, or None.
            attn_dropout_rate: Drop probability for attention probabilities.
            heads: Masked super-model: only the first ``heads`` heads contribute (the others'
                outputs are zeroed before the output projection); None: all.

        Returns:
            Output activations [B, L, D].
        """
        B, L, D = x_BxLxD.shape
        qkv_BxLx3D = self.qkv(x_BxLxD)
        qkv_BxLx3xHxK = qkv_BxLx3D.reshape(B, L, 3, self.num_heads, self.head_dim)
        q_BxLxHxK = qkv_BxLx3xHxK[:, :, 0]
        k_BxLxHxK = qkv_BxLx3xHxK[:, :, 1]
        v_BxLxHxK = qkv_BxLx3xHxK[:, :, 2]
        logits_BxHxLxL = jnp.einsum("bqhk,bshk->bhqs", q_BxLxHxK, k_BxLxHxK).astype(jnp.float32)
        logits_BxHxLxL = logits_BxHxLxL * self.scale
        big_neg = jnp.finfo(jnp.float32).min
        logits_BxHxLxL = jnp.where(mask_Bx1xLxL, logits_BxHxLxL, big_neg)
        probs_BxHxLxL = jax.nn.softmax(logits_BxHxLxL, axis=-1)
        probs_BxHxLxL = dropout(probs_BxHxLxL, attn_dropout_rate, key)
        probs_BxHxLxL = probs_BxHxLxL.astype(v_BxLxHxK.dtype)
        y_BxLxHxK = jnp.einsum("bhqs,bshk->bqhk", probs_BxHxLxL, v_BxLxHxK)
        if heads is not None:
            on_H = (jnp.arange(self.num_heads) < heads).astype(y_BxLxHxK.dtype)
            y_BxLxHxK = y_BxLxHxK * on_H.reshape(1, 1, -1, 1)
        return self.out(y_BxLxHxK.reshape(B, L, D))


class MLP(nnx.Module):
    """Position-wise feed-forward block: Linear, gelu, Linear."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs, inits: _Inits):
        """Builds the two projections.

        Args:
            config: Model config.
            rngs: Parameter initialisation RNGs.
            inits: The model's initializers.
        """
        dtype = jnp.dtype(config.dtype)
        self.up = inits.linear(config.d_model, config.d_ff, dtype, rngs)
        self.down = inits.linear(config.d_ff, config.d_model, dtype, rngs)

    def __call__(self, x_BxLxD: jax.Array, width: jax.Array | None = None) -> jax.Array:
        """Applies the MLP to [B, L, D] activations; with ``width`` (masked super-model) only
        the first ``width`` hidden units are used."""
        h_BxLxF = jax.nn.gelu(self.up(x_BxLxD))
        if width is not None:
            on_F = (jnp.arange(h_BxLxF.shape[-1]) < width).astype(h_BxLxF.dtype)
            h_BxLxF = h_BxLxF * on_F.reshape(1, 1, -1)
        return self.down(h_BxLxF)


class Block(nnx.Module):
    """One Transformer block (attention + MLP) with pre- or post-LN placement."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs, inits: _Inits):
        """Builds the block.

        Args:
            config: Model config.
            rngs: Parameter initialisation RNGs.
            inits: The model's initializers.
        """
        self.pre_norm = config.pre_norm
        dtype = jnp.dtype(config.dtype)
        self.ln_attn = inits.layer_norm(config.d_model, dtype, rngs)
        self.attn = MultiHeadSelfAttention(config, rngs=rngs, inits=inits)
        self.ln_mlp = inits.layer_norm(config.d_model, dtype, rngs)
        self.mlp = MLP(config, rngs=rngs, inits=inits)

    def __call__(
        self,
        x_BxLxD: jax.Array,
        mask_Bx1xLxL: jax.Array,
        *,
        key: jax.Array | None,
        dropout_rate: jax.Array | float,
        attn_dropout_rate: jax.Array | float,
        heads: jax.Array | None = None,
        ff_width: jax.Array | None = None,
    ) -> jax.Array:
        """Applies the block (``heads`` / ``ff_width``: the masked super-model's sizes).

        Args:
            x_BxLxD: Residual stream.
            mask_Bx1xLxL: Attention mask (True = may attend).
            key: PRNG key for this block's dropouts, or None.
            dropout_rate: Residual dropout rate.
            attn_dropout_rate: Attention-probability dropout rate.

        Returns:
            Updated residual stream [B, L, D].
        """
        k_attn, k_res1, k_res2 = _split(key, 3)
        if self.pre_norm:
            h_BxLxD = self.attn(
                self.ln_attn(x_BxLxD),
                mask_Bx1xLxL,
                key=k_attn,
                attn_dropout_rate=attn_dropout_rate,
                heads=heads,
            )
            x_BxLxD = x_BxLxD + dropout(h_BxLxD, dropout_rate, k_res1)
            h_BxLxD = self.mlp(self.ln_mlp(x_BxLxD), ff_width)
            return x_BxLxD + dropout(h_BxLxD, dropout_rate, k_res2)
        h_BxLxD = self.attn(
            x_BxLxD, mask_Bx1xLxL, key=k_attn, attn_dropout_rate=attn_dropout_rate, heads=heads
        )
        x_BxLxD = self.ln_attn(x_BxLxD + dropout(h_BxLxD, dropout_rate, k_res1))
        h_BxLxD = self.mlp(x_BxLxD, ff_width)
        return self.ln_mlp(x_BxLxD + dropout(h_BxLxD, dropout_rate, k_res2))


class Transformer(nnx.Module):
    """Decoder or encoder Transformer with an LM head or a classification head.

    The forward pass is pure: all randomness comes from ``key`` and the dropout rates may be
    traced arrays, so the model can be ``nnx.split`` and vmapped over a population whose
    members carry their own parameters, keys and rates.
    """

    def __init__(
        self,
        config: TransformerConfig,
        *,
        rngs: nnx.Rngs,
        init_scheme: jax.Array | None = None,
        init_scale: jax.Array | None = None,
    ):
        """Builds the model.

        Args:
            config: Model config; validated here.
            rngs: Parameter initialisation RNGs (not used at call time).
            init_scheme: Per-member override of ``config.scheme``: an integer code into
                :data:`jaxhpo.models.mup.INIT_SCHEMES`, possibly a traced array.
            init_scale: Per-member override of ``config.init_scale`` (possibly traced).
        """
        config.validate()
        self.config = config
        dtype = jnp.dtype(config.dtype)
        inits = _Inits(
            scheme=config.scheme if init_scheme is None else init_scheme,
            scale=config.init_scale if init_scale is None else init_scale,
            width_mult=config.width_mult,
            is_mup=config.is_mup,
        )
        self.token_embed = inits.embed(config.vocab_size, config.d_model, dtype, rngs)
        self.pos_embed = inits.embed(config.max_len, config.d_model, dtype, rngs)
        self.blocks = nnx.List(
            [Block(config, rngs=rngs, inits=inits) for _ in range(config.num_layers)]
        )
        self.final_ln = inits.layer_norm(config.d_model, dtype, rngs) if config.pre_norm else None
        if config.num_classes is not None:
            self.head = inits.linear(config.d_model, config.num_classes, dtype, rngs, "readout")
        elif config.tie_embeddings:
            self.head = None
        else:
            self.head = inits.linear(config.d_model, config.vocab_size, dtype, rngs, "readout")

    def __call__(
        self,
        tokens_BxL: jax.Array,
        *,
        mask_BxL: jax.Array | None = None,
        key: jax.Array | None = None,
        dropout_rate: jax.Array | float = 0.0,
        attn_dropout_rate: jax.Array | float = 0.0,
        depth: jax.Array | None = None,
        heads: jax.Array | None = None,
        ff_width: jax.Array | None = None,
    ) -> jax.Array:
        """Runs the model.

        ``depth``, ``heads`` and ``ff_width`` (possibly traced, per member) run the *masked
        super-model*: the first ``depth`` blocks (the others are the identity), the first
        ``heads`` heads of each attention, the first ``ff_width`` hidden units of each MLP. The
        parameters keep the full shape, so members of different structure share one program;
        the masked parts get zero gradients. None: the full model.

        Args:
            tokens_BxL: int32 token ids, ``L <= config.max_len``.
            mask_BxL: Optional bool mask, True for real tokens. Keys at padded positions are
                never attended to, and mean pooling ignores padded positions.
            key: PRNG key for dropout; None means deterministic (no dropout).
            dropout_rate: Residual/embedding dropout rate (float or traced scalar array).
            attn_dropout_rate: Attention-probability dropout rate (float or traced scalar).

        Returns:
            float32 logits, ``[B, L, vocab_size]`` for the LM head or ``[B, num_classes]``
            for the classification head.

        Raises:
            ValueError: If the sequence is longer than ``config.max_len``.
        """
        cfg = self.config
        _, L = tokens_BxL.shape
        # a structure fixed at the full model for the run (Python constants) masks nothing
        depth = None if _full(depth, cfg.num_layers) else depth
        heads = None if _full(heads, cfg.num_heads) else heads
        ff_width = None if _full(ff_width, cfg.d_ff) else ff_width
        if cfg.max_len < L:
            raise ValueError(f"sequence length {L} exceeds model.max_len ({cfg.max_len})")

        mask_LxL = jnp.ones((L, L), dtype=bool)
        if cfg.causal:
            mask_LxL = jnp.tril(mask_LxL)
        mask_Bx1xLxL = mask_LxL[None, None]
        if mask_BxL is not None:
            mask_BxL = mask_BxL.astype(bool)
            mask_Bx1xLxL = mask_Bx1xLxL & mask_BxL[:, None, None, :]

        key_embed, *layer_keys = _split(key, cfg.num_layers + 1)
        x_BxLxD = self.token_embed(tokens_BxL) + self.pos_embed(jnp.arange(L))[None]
        x_BxLxD = dropout(x_BxLxD, dropout_rate, key_embed)
        for i, (block, layer_key) in enumerate(zip(self.blocks, layer_keys, strict=True)):
            y_BxLxD = block(
                x_BxLxD,
                mask_Bx1xLxL,
                key=layer_key,
                dropout_rate=dropout_rate,
                attn_dropout_rate=attn_dropout_rate,
                heads=heads,
                ff_width=ff_width,
            )
            x_BxLxD = y_BxLxD if depth is None else jnp.where(i < depth, y_BxLxD, x_BxLxD)
        if self.final_ln is not None:
            x_BxLxD = self.final_ln(x_BxLxD)

        if cfg.num_classes is None:
            if self.head is None:
                logits_BxLxV = self.token_embed.attend(x_BxLxD)
            else:
                logits_BxLxV = self.head(x_BxLxD)
            return self._readout(logits_BxLxV)

        if cfg.pooling == "first":
            pooled_BxD = x_BxLxD[:, 0]
        elif mask_BxL is None:
            pooled_BxD = jnp.mean(x_BxLxD, axis=1)
        else:
            weights_BxLx1 = mask_BxL[:, :, None].astype(x_BxLxD.dtype)
            count_Bx1 = jnp.maximum(jnp.sum(weights_BxLx1, axis=1), 1.0)
            pooled_BxD = jnp.sum(x_BxLxD * weights_BxLx1, axis=1) / count_Bx1
        return self._readout(self.head(pooled_BxD))

    def _readout(self, logits: jax.Array) -> jax.Array:
        """float32 logits, times µP's output multiplier ``1/width_mult`` (1 otherwise)."""
        logits = logits.astype(jnp.float32)
        mult = self.config.readout_mult
        return logits if mult == 1.0 else logits * mult
