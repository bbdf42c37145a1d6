"""Model architectures this project implements itself, in plain PyTorch.

A checkpoint whose config.json names one of these (`model_type`) is loaded by our own code: no
modelling code from the model repository is imported, and no CUDA-only package is needed. Each
architecture is a subpackage with its config, its modules (named as the checkpoint's tensors) and
its weight loading. Only `plantcad_flows.scoring` imports them.
"""
