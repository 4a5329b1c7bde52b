"""Triton kernels of fastral's ops, installed as ``fastral.kernels``: one module per op, each the ``triton`` backend's
launchers of that op, with the entry points of every launcher module (see :mod:`fastral.ops._torch`)."""
