"""Variant effects, pure: a user's VCF (or table) of variants and a reference FASTA in, normalised
variants, reference windows, shards, metrics and genome-browser outputs out. No torch and no
Prefect here: the model side is the family's `score` (`families/variant_effect.py`, docs/variants.md)."""
