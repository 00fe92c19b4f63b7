"""The prediction pipeline: MSA search, features, AlphaFold2 inference, ranking and outputs.

Heavy imports (jax, haiku, alphafold, pyhmmer) live only in these modules.
"""
