"""Benchmark data on its way to a model: sequences (alphabet, centre crop, reverse complement,
token tables), split loading, validation and sampling, and the per-node copy of remote files."""
