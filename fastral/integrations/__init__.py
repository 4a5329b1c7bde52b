"""Adapters that let other active-learning libraries use fastral on their own layouts.

:mod:`fastral.integrations.baal`: region heuristics on baal's ``[N, C, H, W, T]`` predictions and a baal
``ActiveLearningDataset`` over the regions of a fastral data set (``pip install "fastral-al[baal]"``).
Each adapter is its own module, imported on demand, so fastral never needs the other library to import.
"""
