"""The architecture of one Transformer (:class:`TransformerConfig`), checked in one pass
(:mod:`jaxhpo.models.transformer` builds the model from it)."""

from __future__ import annotations

import dataclasses
import math

from jaxhpo.models import mup

_POOLINGS = ("mean", "first")
_DTYPES = ("float32", "bfloat16", "float16")


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
        parametrization: ``"standard"`` or ``"mup"`` (see the module docstring).
        mup_base_width: The base width of µP's ``width_mult = d_model / mup_base_width``
            (None: ``d_model``, i.e. ``width_mult = 1``). Also used by the ``mup`` init scheme.
        init_scheme: One of :data:`jaxhpo.models.mup.INIT_SCHEMES`; None picks ``"normal"``
            (standard) or ``"mup"`` (µP).
        init_scale: Multiplier of every weight matrix's and embedding's init std.
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
    parametrization: str = "standard"
    mup_base_width: int | None = None
    init_scheme: str | None = None
    init_scale: float = 1.0

    @property
    def width_mult(self) -> float:
        """``d_model / mup_base_width`` (1 without a base width)."""
        return self.d_model / (self.mup_base_width or self.d_model)

    @property
    def is_mup(self) -> bool:
        return self.parametrization == "mup"

    @property
    def scheme(self) -> str:
        """The initialization scheme in force (``init_scheme`` or the parametrization's)."""
        if self.init_scheme is not None:
            return self.init_scheme
        return "mup" if self.is_mup else "normal"

    @property
    def attention_scale(self) -> float:
        """``1/sqrt(head_dim)``; under µP ``1/sqrt(head_dim * width_mult)`` (∝ 1/head_dim)."""
        mult = self.width_mult if self.is_mup else 1.0
        return 1.0 / math.sqrt(self.head_dim * mult)

    @property
    def readout_mult(self) -> float:
        """The readout's output multiplier: ``1/width_mult`` under µP, else 1."""
        return 1.0 / self.width_mult if self.is_mup else 1.0

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
        if self.parametrization not in mup.PARAMETRIZATIONS:
            raise ValueError(
                f"model.parametrization: must be one of {mup.PARAMETRIZATIONS}, "
                f"got {self.parametrization!r}"
            )
        base = self.mup_base_width
        if base is not None and (isinstance(base, bool) or not isinstance(base, int) or base <= 0):
            raise ValueError(f"model.mup_base_width: must be None or a positive int, got {base!r}")
        if self.init_scheme is not None:
            mup.scheme_index(self.init_scheme)
        scale = self.init_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale >= 0:
            raise ValueError(f"model.init_scale: must be a number >= 0, got {scale!r}")
        if not math.isfinite(scale):
            raise ValueError(f"model.init_scale: must be finite, got {scale!r}")
