"""jaxhpo: population-based hyperparameter tuning of Transformers in JAX."""
