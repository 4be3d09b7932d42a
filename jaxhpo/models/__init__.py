"""Models trained by jaxhpo: one model definition, vmapped into a population."""

from jaxhpo.models.transformer import Transformer, TransformerConfig

__all__ = ["Transformer", "TransformerConfig"]
