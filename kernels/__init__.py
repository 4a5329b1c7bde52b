"""Triton kernels of fastral's ops, installed as ``fastral.kernels`` (one module per op)."""
