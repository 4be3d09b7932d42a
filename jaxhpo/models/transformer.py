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
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

_POOLINGS = ("mean", "first")
_DTYPES = ("float32", "bfloat16", "float16")
_INIT = nnx.initializers.normal(stddev=0.02)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture of one Transformer.

    Attributes:
        vocab_size: Number of token ids.
        max_len: Maximum sequence length (size of the learned positional table).
        num_layers: Number of Transformer blocks.
        num_heads: Number of attention heads; must divide ``d_model``.
        d_model: Residual stream width.
        d_ff: Hidden width of the MLP.
        pre_norm: Pre-LN (GPT-2 style, with a final LayerNorm) if True, else post-LN
            (original Transformer / BERT).
        tie_embeddings: If True the LM head reuses the token embedding matrix.
        causal: Causal self-attention (decoder) if True, bidirectional (encoder) if False.
        num_classes: None for an LM head (logits over the vocabulary at every position);
            an int for a sequence classification head.
        pooling: Classification pooling, ``"mean"`` over non-padding tokens or ``"first"``
            (the token at position 0, e.g. a CLS token).
        dtype: Computation dtype name; parameters are always stored in float32.
    """

    vocab_size: int
    max_len: int
    num_layers: int = 2
    num_heads: int = 4
    d_model: int = 64
    d_ff: int = 256
    pre_norm: bool = True
    tie_embeddings: bool = True
    causal: bool = True
    num_classes: int | None = None
    pooling: str = "mean"
    dtype: str = "float32"

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.num_heads

    def validate(self) -> None:
        """Checks the config.

        Raises:
            ValueError: One line naming the offending field, e.g.
                ``model.num_heads: d_model (64) must be divisible by num_heads (5)``.
        """
        for name in ("vocab_size", "max_len", "num_layers", "num_heads", "d_model", "d_ff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"model.{name}: must be a positive int, got {value!r}")
        if self.d_model % self.num_heads != 0:
            raise ValueError(
                f"model.num_heads: d_model ({self.d_model}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        if self.num_classes is not None and (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes <= 0
        ):
            raise ValueError(
                f"model.num_classes: must be None or a positive int, got {self.num_classes!r}"
            )
        if self.pooling not in _POOLINGS:
            raise ValueError(f"model.pooling: must be one of {_POOLINGS}, got {self.pooling!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"model.dtype: must be one of {_DTYPES}, got {self.dtype!r}")


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
    if key is None:
        return x
    keep = 1.0 - jnp.asarray(rate, dtype=jnp.float32)
    # uniform < 1.0 always holds, so rate 0 keeps everything and divides by exactly 1.
    keep_mask = jax.random.bernoulli(key, keep, x.shape)
    return jnp.where(keep_mask, x / keep.astype(x.dtype), jnp.zeros_like(x))


def _split(key: jax.Array | None, num: int) -> list[jax.Array | None]:
    """Splits ``key`` into ``num`` keys, or returns ``num`` Nones when ``key`` is None."""
    if key is None:
        return [None] * num
    return list(jax.random.split(key, num))


class MultiHeadSelfAttention(nnx.Module):
    """Multi-head self-attention with a traced attention-probability dropout rate."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        """Builds the fused qkv and output projections.

        Args:
            config: Model config.
            rngs: Parameter initialisation RNGs.
        """
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        dtype = jnp.dtype(config.dtype)
        self.qkv = nnx.Linear(
            config.d_model, 3 * config.d_model, kernel_init=_INIT, dtype=dtype, rngs=rngs
        )
        self.out = nnx.Linear(
            config.d_model, config.d_model, kernel_init=_INIT, dtype=dtype, rngs=rngs
        )

    def __call__(
        self,
        x_BxLxD: jax.Array,
        mask_Bx1xLxL: jax.Array,
        *,
        key: jax.Array | None,
        attn_dropout_rate: jax.Array | float,
    ) -> jax.Array:
        """Attends.

        Args:
            x_BxLxD: Input activations.
            mask_Bx1xLxL: Bool, True where query i may attend to key j (broadcast over
                heads; the batch axis may be 1).
            key: PRNG key for attention-probability dropout, or None.
            attn_dropout_rate: Drop probability for attention probabilities.

        Returns:
            Output activations [B, L, D].
        """
        B, L, D = x_BxLxD.shape
        qkv_BxLx3D = self.qkv(x_BxLxD)
        qkv_BxLx3xHxK = qkv_BxLx3D.reshape(B, L, 3, self.num_heads, self.head_dim)
        q_BxLxHxK = qkv_BxLx3xHxK[:, :, 0]
        k_BxLxHxK = qkv_BxLx3xHxK[:, :, 1]
        v_BxLxHxK = qkv_BxLx3xHxK[:, :, 2]
        scale = 1.0 / math.sqrt(self.head_dim)
        logits_BxHxLxL = jnp.einsum("bqhk,bshk->bhqs", q_BxLxHxK, k_BxLxHxK).astype(jnp.float32)
        logits_BxHxLxL = logits_BxHxLxL * scale
        big_neg = jnp.finfo(jnp.float32).min
        logits_BxHxLxL = jnp.where(mask_Bx1xLxL, logits_BxHxLxL, big_neg)
        probs_BxHxLxL = jax.nn.softmax(logits_BxHxLxL, axis=-1)
        probs_BxHxLxL = dropout(probs_BxHxLxL, attn_dropout_rate, key)
        probs_BxHxLxL = probs_BxHxLxL.astype(v_BxLxHxK.dtype)
        y_BxLxHxK = jnp.einsum("bhqs,bshk->bqhk", probs_BxHxLxL, v_BxLxHxK)
        return self.out(y_BxLxHxK.reshape(B, L, D))


class MLP(nnx.Module):
    """Position-wise feed-forward block: Linear, gelu, Linear."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        """Builds the two projections.

        Args:
            config: Model config.
            rngs: Parameter initialisation RNGs.
        """
        dtype = jnp.dtype(config.dtype)
        self.up = nnx.Linear(config.d_model, config.d_ff, kernel_init=_INIT, dtype=dtype, rngs=rngs)
        self.down = nnx.Linear(
            config.d_ff, config.d_model, kernel_init=_INIT, dtype=dtype, rngs=rngs
        )

    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        """Applies the MLP to [B, L, D] activations."""
        return self.down(jax.nn.gelu(self.up(x_BxLxD)))


class Block(nnx.Module):
    """One Transformer block (attention + MLP) with pre- or post-LN placement."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        """Builds the block.

        Args:
            config: Model config.
            rngs: Parameter initialisation RNGs.
        """
        self.pre_norm = config.pre_norm
        dtype = jnp.dtype(config.dtype)
        self.ln_attn = nnx.LayerNorm(config.d_model, dtype=dtype, rngs=rngs)
        self.attn = MultiHeadSelfAttention(config, rngs=rngs)
        self.ln_mlp = nnx.LayerNorm(config.d_model, dtype=dtype, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(
        self,
        x_BxLxD: jax.Array,
        mask_Bx1xLxL: jax.Array,
        *,
        key: jax.Array | None,
        dropout_rate: jax.Array | float,
        attn_dropout_rate: jax.Array | float,
    ) -> jax.Array:
        """Applies the block.

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
            )
            x_BxLxD = x_BxLxD + dropout(h_BxLxD, dropout_rate, k_res1)
            h_BxLxD = self.mlp(self.ln_mlp(x_BxLxD))
            return x_BxLxD + dropout(h_BxLxD, dropout_rate, k_res2)
        h_BxLxD = self.attn(x_BxLxD, mask_Bx1xLxL, key=k_attn, attn_dropout_rate=attn_dropout_rate)
        x_BxLxD = self.ln_attn(x_BxLxD + dropout(h_BxLxD, dropout_rate, k_res1))
        h_BxLxD = self.mlp(x_BxLxD)
        return self.ln_mlp(x_BxLxD + dropout(h_BxLxD, dropout_rate, k_res2))


class Transformer(nnx.Module):
    """Decoder or encoder Transformer with an LM head or a classification head.

    The forward pass is pure: all randomness comes from ``key`` and the dropout rates may be
    traced arrays, so the model can be ``nnx.split`` and vmapped over a population whose
    members carry their own parameters, keys and rates.
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        """Builds the model.

        Args:
            config: Model config; validated here.
            rngs: Parameter initialisation RNGs (not used at call time).
        """
        config.validate()
        self.config = config
        dtype = jnp.dtype(config.dtype)
        self.token_embed = nnx.Embed(
            config.vocab_size, config.d_model, embedding_init=_INIT, dtype=dtype, rngs=rngs
        )
        self.pos_embed = nnx.Embed(
            config.max_len, config.d_model, embedding_init=_INIT, dtype=dtype, rngs=rngs
        )
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
        self.final_ln = (
            nnx.LayerNorm(config.d_model, dtype=dtype, rngs=rngs) if config.pre_norm else None
        )
        if config.num_classes is not None:
            self.head = nnx.Linear(
                config.d_model, config.num_classes, kernel_init=_INIT, dtype=dtype, rngs=rngs
            )
        elif config.tie_embeddings:
            self.head = None
        else:
            self.head = nnx.Linear(
                config.d_model, config.vocab_size, kernel_init=_INIT, dtype=dtype, rngs=rngs
            )

    def __call__(
        self,
        tokens_BxL: jax.Array,
        *,
        mask_BxL: jax.Array | None = None,
        key: jax.Array | None = None,
        dropout_rate: jax.Array | float = 0.0,
        attn_dropout_rate: jax.Array | float = 0.0,
    ) -> jax.Array:
        """Runs the model.

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
        for block, layer_key in zip(self.blocks, layer_keys, strict=True):
            x_BxLxD = block(
                x_BxLxD,
                mask_Bx1xLxL,
                key=layer_key,
                dropout_rate=dropout_rate,
                attn_dropout_rate=attn_dropout_rate,
            )
        if self.final_ln is not None:
            x_BxLxD = self.final_ln(x_BxLxD)

        if cfg.num_classes is None:
            if self.head is None:
                logits_BxLxV = self.token_embed.attend(x_BxLxD)
            else:
                logits_BxLxV = self.head(x_BxLxD)
            return logits_BxLxV.astype(jnp.float32)

        if cfg.pooling == "first":
            pooled_BxD = x_BxLxD[:, 0]
        elif mask_BxL is None:
            pooled_BxD = jnp.mean(x_BxLxD, axis=1)
        else:
            weights_BxLx1 = mask_BxL[:, :, None].astype(x_BxLxD.dtype)
            count_Bx1 = jnp.maximum(jnp.sum(weights_BxLx1, axis=1), 1.0)
            pooled_BxD = jnp.sum(x_BxLxD * weights_BxLx1, axis=1) / count_Bx1
        logits_BxC = self.head(pooled_BxD)
        return logits_BxC.astype(jnp.float32)
