"""Models and their scores: loading through transformers' Auto classes, the batching input
pipeline, `score_frame`, the batch-size probe and the per-process model cache.

This is the only room of the core that imports torch and transformers, and the only one that
imports `plantcad_flows.architectures` (our own PyTorch models, which import torch too); every
other room stays importable (and a dry run stays fast) without them.
"""
