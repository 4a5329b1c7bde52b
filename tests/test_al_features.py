"""RALIS feature layout: the official dimensions, class fractions, KL histograms as the trailing gate columns."""

import torch

from fastral import kl_histogram, region_stats
from fastral.al.features import KL_BINS, action_features, class_distribution, region_features


def test_cityscapes_layout_has_the_official_dimensions():
    logits = torch.randn(2, 19, 256, 384) * 3
    feats = region_features(logits, (128, 128))
    assert feats.base.shape == (2 * 2 * 3, 20 + 3 * 64)  # 212 per region, as in the official code
    stats = region_stats(logits, (128, 128))
    torch.testing.assert_close(feats.class_dist[:, :19], stats.counts.float() / 128**2)
    assert (feats.class_dist[:, 19] == 0).all()  # predictions never fill the ignore slot
    torch.testing.assert_close(feats.base[:, 20:].reshape(-1, 3, 8, 8), stats.entropy_pool)
    actions = action_features(feats.base, feats.class_dist, torch.zeros(0, 20))
    assert actions.shape == (12, 212 + 2 * KL_BINS)  # 276
    assert (actions[:, 212 : 212 + KL_BINS] == 0).all()  # nothing labelled yet: zeros, as officially
    torch.testing.assert_close(actions[:, -KL_BINS:], kl_histogram(feats.class_dist, feats.class_dist, KL_BINS))
    torch.testing.assert_close(actions[:, -KL_BINS:].sum(1), torch.ones(12))


def test_class_distribution_keeps_ignored_pixels_in_the_last_slot():
    counts = torch.tensor([[3, 1, 0], [0, 0, 0]], dtype=torch.int32)
    dist = class_distribution(counts, torch.tensor([4, 0], dtype=torch.int32))
    assert dist.tolist() == [[0.375, 0.125, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]]
