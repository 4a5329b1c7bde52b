"""fastral inside baal 2.x: region heuristics against baal's own, fastral data sets and models in baal's loop.

Runs against the real, installed baal (the ``[baal]`` extra); skipped only where baal is not installed.
"""

import warnings

import numpy as np
import pytest
import torch
from _data_helpers import single_thread  # noqa: F401 (fixture)

baal = pytest.importorskip("baal")

from baal.active import ActiveLearningDataset, ActiveLearningLoop  # noqa: E402
from baal.active.heuristics import BALD, Entropy  # noqa: E402
from baal.bayesian.dropout import MCDropoutModule, patch_module  # noqa: E402
from baal.modelwrapper import ModelWrapper, TrainingArgs  # noqa: E402
from scipy.special import softmax  # noqa: E402

from fastral.data import IGNORE_INDEX, LabeledRegions, Streets  # noqa: E402
from fastral.integrations.baal import (  # noqa: E402
    RegionActiveLearningDataset,
    RegionBALD,
    RegionDataset,
    RegionMeanLogitEntropy,
    RegionPredictiveEntropy,
)
from fastral.models import SemanticFPN, mc_dropout  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

REGION = (16, 16)
NUMPY_REDUCTIONS = {"mean": np.mean, "max": np.max, "sum": np.sum}


def baal_predictions(seed=0, shape=(3, 5, 40, 56, 6)):
    """MC logits in baal's layout [N, C, H, W, T]; 40x56 leaves a remainder the region grid drops."""
    return (np.random.default_rng(seed).normal(size=shape) * 2).astype(np.float32)


def region_reduce(pixel_scores, reduction, region=REGION):
    """baal's per-pixel scores [N, H, W] reduced over fastral's region grid, in region_grid order (numpy)."""
    n, h, w = pixel_scores.shape
    ny, nx = h // region[0], w // region[1]
    tiles = pixel_scores[:, : ny * region[0], : nx * region[1]].reshape(n, ny, region[0], nx, region[1])
    return NUMPY_REDUCTIONS[reduction](tiles, axis=(2, 4)).reshape(-1)


@pytest.mark.parametrize("reduction", ["mean", "max", "sum"])
@pytest.mark.parametrize("probabilities", [False, True])
def test_region_bald_equals_baal_bald_and_its_ranks(reduction, probabilities):
    x = baal_predictions()
    if probabilities:
        x = softmax(x, 1).astype(np.float32)
    expected = region_reduce(BALD().compute_score(x), reduction)  # baal's heuristic, then the region reduction
    heuristic = RegionBALD(region=REGION, reduction=reduction)  # from_logits decided as baal decides
    scores = heuristic.get_uncertainties(x)
    assert scores.shape == (3 * 2 * 3,) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6 * REGION[0] * REGION[1])
    ranks, ranked_scores = heuristic.get_ranks(x)
    np.testing.assert_array_equal(ranks, BALD().reorder_indices(expected))
    np.testing.assert_array_equal(heuristic(x), ranks)
    assert ranked_scores is not None and np.array_equal(ranked_scores, scores)
    explicit = RegionBALD(region=REGION, reduction=reduction, from_logits=not probabilities).get_uncertainties(x)
    np.testing.assert_array_equal(explicit, scores)


def test_the_two_region_entropies():
    x = baal_predictions(1)
    # baal's Entropy on logits averages the logits: RegionMeanLogitEntropy.
    np.testing.assert_allclose(
        RegionMeanLogitEntropy(REGION).get_uncertainties(x),
        region_reduce(Entropy().compute_score(x), "mean"),
        rtol=1e-5,
    )
    # On probabilities baal's Entropy is the predictive entropy H[mean_t p_t]: RegionPredictiveEntropy.
    p = softmax(x, 1).astype(np.float32)
    predictive = RegionPredictiveEntropy(REGION).get_uncertainties(x)
    np.testing.assert_allclose(predictive, region_reduce(Entropy().compute_score(p), "mean"), rtol=1e-5)
    np.testing.assert_allclose(RegionPredictiveEntropy(REGION).get_uncertainties(p), predictive, rtol=1e-5)
    # The two senses differ on logits: averaging logits first makes a sharper mean prediction.
    assert (RegionMeanLogitEntropy(REGION).get_uncertainties(x) < predictive).all()
    with pytest.raises(ValueError, match=r"probabilities.*use RegionPredictiveEntropy"):
        RegionMeanLogitEntropy(REGION).get_uncertainties(p)


def test_scores_are_images_in_order_then_regions_in_region_grid_order():
    x = np.zeros((3, 4, 32, 48, 5), np.float32)  # every sample certain of class 0: BALD 0 everywhere
    x[:, 0] = 10
    x[1, :, 16:32, 32:48] = np.random.default_rng(0).normal(size=(4, 16, 16, 5)) * 3  # image 1, cell (1, 2)
    scores = RegionBALD(region=REGION, from_logits=True).get_uncertainties(x)
    regions_per_image = 2 * 3
    assert RegionBALD(region=REGION, from_logits=True)(x)[0] == 1 * regions_per_image + 1 * 3 + 2
    assert np.count_nonzero(scores > 1e-3) == 1


def test_bad_arguments_name_the_argument():
    x = baal_predictions()
    with pytest.raises(ValueError, match=r"'predictions' must be baal's \[N, C, H, W, T\].*shape \(3, 5, 40, 56\)"):
        RegionBALD(REGION).get_uncertainties(x[..., 0])
    with pytest.raises(ValueError, match=r"'region' \(48, 16\) \(h, w\) is larger than the 40x56"):
        RegionBALD((48, 16)).get_uncertainties(x)
    with pytest.raises(ValueError, match=r"'reduction' must be one of .*got 'min'"):
        RegionBALD(REGION, reduction="min")
    with pytest.raises(TypeError, match=r"'from_logits' must be True, False or None.*got 'yes'"):
        RegionPredictiveEntropy(REGION, from_logits="yes")
    with pytest.raises(TypeError, match="'region' must be an int or a pair"):
        RegionBALD("16")


def tiny_streets(n=3):
    return Streets("val", num_images=n, size=(64, 96), region=(32, 32), progress=False)


def test_data_sets_are_torch_datasets():
    ds = tiny_streets()
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 3
    image, label = ds[1]
    assert torch.equal(image, ds.image(1)) and torch.equal(label, ds.label(1)) and label.dtype == torch.int64
    images, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert images.shape == (3, 3, 64, 96) and torch.equal(labels, ds.labels(range(3)))
    with pytest.raises(IndexError, match="out of range"):
        ds[3]
    # Whole images in baal: its ActiveLearningDataset takes a data set with a label() method for an oracle that
    # needs label values; can_label=False (baal's own advice) labels by index.
    al = ActiveLearningDataset(ds)
    al.can_label = False
    al.label([2])
    assert len(al) == 1 and torch.equal(al[0][1], ds.label(2))


def test_region_dataset_items_are_region_crops():
    ds = tiny_streets()
    regions = RegionDataset(ds)
    assert len(regions) == 3 * 2 * 3
    crop, label = regions[1 * 6 + 4]  # image 1, grid cell (1, 1)
    assert torch.equal(crop, ds.image(1)[:, 32:64, 32:64]) and torch.equal(label, ds.label(1)[32:64, 32:64])
    with pytest.raises(IndexError, match=r"region ids \[18\] out of range"):
        regions[18]


def test_region_active_learning_dataset_keeps_labeled_regions_in_step():
    ds = tiny_streets()
    labeled = LabeledRegions(ds)
    labeled.add([5])
    al = RegionActiveLearningDataset(ds, labeled, random_state=0)
    assert al.n_labelled == 1 and al.labelled[5]
    al.label([0, 5])  # pool positions: region 0, and region 6 (region 5 is labelled, so not in the pool)
    assert labeled.region_ids == [5, 0, 6] and sorted(np.flatnonzero(al.labelled)) == [0, 5, 6]
    al.label_regions([17, 9])
    assert labeled.region_ids == [5, 0, 6, 17, 9] and al.n_labelled == 5
    crop, label = al[0]  # the labelled set's items are region crops in data-set region id order
    assert torch.equal(crop, ds.image(0)[:, :32, :32]) and torch.equal(label, ds.label(0)[:32, :32])
    al.label_randomly(2)
    assert len(labeled) == al.n_labelled == 7
    # Training labels from the oracle: exactly the labelled pixels, the rest ignored.
    revealed = labeled.training_label(1)
    assert (revealed != IGNORE_INDEX).sum() == ((ds.label(1) != IGNORE_INDEX) & labeled.mask(1)).sum()
    # A saved baal state restores both, in AL-step order.
    state = al.state_dict()
    other = RegionActiveLearningDataset(ds)
    other.load_state_dict(state)
    assert other.labeled_regions.region_ids[:2] == [5, 0] and set(other.labeled_regions) == set(labeled)
    with pytest.raises(ValueError, match=r"region ids \[9\] are labelled"):
        al.label_regions([9])
    with pytest.raises(IndexError, match=r"pool index 11 out of range \[0, 11\)"):
        al.label([11])
    with pytest.raises(ValueError, match="'value' must be None"):
        al.label([0], value=[torch.zeros(32, 32)])
    with pytest.raises(ValueError, match="'labeled' must be the LabeledRegions of 'dataset'"):
        RegionActiveLearningDataset(tiny_streets(2), labeled)
    assert len(labeled) == 7  # failed calls label nothing


def tiny_model(num_classes):
    torch.manual_seed(0)
    return SemanticFPN(num_classes, width=8, fpn_channels=16, head_channels=8)


def test_baal_patch_module_gives_mc_samples_and_keeps_fastral_semantics():
    model = tiny_model(11).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval: deterministic
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # baal warns "No layer was modified" when it finds no dropout module
            patched = MCDropoutModule(model)
        assert not torch.equal(patched(x), patched(x))  # baal's always-on dropout, model still in eval mode
        assert not model.backbone.training
        patched.unpatch()
        assert type(model.dropout) is torch.nn.Dropout and torch.equal(model(x), model(x))
        patch_module(model)
        samples = torch.stack(list(model.mc_samples(x, 3, generator=torch.Generator().manual_seed(0))))
        again = torch.stack(list(model.mc_samples(x, 3, generator=torch.Generator().manual_seed(0))))
        assert torch.equal(samples, again)  # fastral's own sampling is unchanged by the patch
        with mc_dropout(model):
            assert not torch.equal(model(x), model(x))


def test_a_real_baal_loop_on_regions():
    """baal's ModelWrapper + patch_module + ActiveLearningLoop with RegionBALD on a fastral data set's regions,
    then one acquisition from whole-image predictions by data-set region id."""
    ds = tiny_streets(4)
    model = patch_module(tiny_model(ds.num_classes))
    args = TrainingArgs(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        criterion=torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX),
        batch_size=4,
        epoch=1,
        use_cuda=False,
        workers=0,
    )
    wrapper = ModelWrapper(model, args)
    al = RegionActiveLearningDataset(ds, random_state=0)
    al.label_randomly(4)
    wrapper.train_on_dataset(al)
    heuristic = RegionBALD(region=ds.region, from_logits=True)
    loop = ActiveLearningLoop(al, wrapper.predict_on_dataset, heuristic, query_size=3, iterations=4, verbose=False)
    pool_before = np.flatnonzero(~al.labelled)
    predictions = wrapper.predict_on_dataset(al.pool, iterations=4, verbose=False)
    assert predictions.shape == (len(pool_before), ds.num_classes, 32, 32, 4)
    assert (heuristic.get_uncertainties(predictions) > 0).all()  # MC dropout works in eval mode
    assert loop.step()
    assert al.n_labelled == len(al.labeled_regions) == 7
    # Whole images: predictions [N, C, H, W, T] -> N * R scores = the images' data-set region ids, in order.
    images = [1, 3]
    full = wrapper.predict_on_dataset(torch.utils.data.Subset(ds, images), iterations=4, verbose=False)
    scores = heuristic.get_uncertainties(full)
    ids = ds.regions.ids_of_images(images)
    assert scores.shape == ids.shape == (2 * 6,)
    best = [r for r in ids[heuristic.reorder_indices(scores)] if not al.labelled[r]][:2]
    al.label_regions(best)
    assert al.labeled_regions.region_ids[-2:] == best and al.n_labelled == 9
