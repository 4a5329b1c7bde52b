"""RALIS split builder: disjoint sets, D_S close to the train class distribution, JSON round trip, checks."""

import dataclasses
import itertools
import json

import numpy as np
import pytest
from scipy.stats import entropy

from fastral.data import PRESETS, ALSplitRecipe, ALSplits, Streets, build_splits, get_preset
from fastral.data.splits import SET_NAMES, SplitSet, choose_state_set, class_histograms, kl_to
from fastral.data.splits import main as splits_main
from fastral.data.streets import SPLIT_SIZES

RECIPE = ALSplitRecipe(source="train", d_s=3, d_t=5, d_r=None, d_v=None, reward_split="val", test_split="test")


@pytest.fixture(scope="module")
def train():
    return Streets("train", seed=1, num_images=16, progress=False)


def test_kl_matches_scipy():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(6))
    counts = rng.integers(0, 50, (4, 6)).astype(float)
    counts[0, 2] = 0  # a class the subset misses
    np.testing.assert_allclose(
        kl_to(p, counts), [entropy(p, np.maximum(c / c.sum(), 1e-10)) for c in counts], rtol=1e-9
    )


def test_state_set_search_finds_the_optimum_of_a_small_problem():
    rng = np.random.default_rng(5)
    hist = rng.integers(0, 100, (9, 4)) * (rng.random((9, 4)) < 0.6)
    candidates = np.array([0, 2, 3, 4, 6, 7, 8])
    chosen, kl = choose_state_set(hist, candidates, 3, np.random.default_rng(0), trials=64)
    reference = hist.sum(0) / hist.sum()
    best = min(kl_to(reference, hist[list(c)].sum(0)) for c in itertools.combinations(candidates, 3))
    assert kl == pytest.approx(best) and set(chosen) <= set(candidates)


def test_build_disjoint_sets_with_close_state_set(train):
    splits = build_splits(train, RECIPE, seed=0, progress=False)
    d_s, d_t, d_v = (splits.indices(n) for n in ("d_s", "d_t", "d_v"))
    assert (len(d_s), len(d_t), len(d_v)) == (3, 5, 8)
    assert sorted(d_s + d_t + d_v) == list(range(16))
    assert splits.split_of("d_r") == "val" and splits.split_of("test") == "test"
    # D_S is at least as close to the train distribution as the typical random triple of the labelled part.
    hist = class_histograms(train, progress=False)
    reference = hist.sum(0) / hist.sum()
    labelled = d_s + d_t
    random_kls = [kl_to(reference, hist[list(c)].sum(0)) for c in itertools.combinations(labelled, 3)]
    assert splits.d_s_kl == pytest.approx(kl_to(reference, hist[d_s].sum(0)))
    assert splits.d_s_kl <= min(random_kls) + 1e-12
    assert build_splits(train, RECIPE, seed=0, progress=False).to_dict() == splits.to_dict()  # reproducible
    assert build_splits(train, RECIPE, seed=1, progress=False).indices("d_v") != d_v


def test_cityscapes_style_recipe_takes_d_r_from_train(train):
    recipe = ALSplitRecipe(source="train", d_s=2, d_t=3, d_r=4, d_v=5, reward_split=None, test_split="val")
    splits = build_splits(train, recipe, progress=False)
    sets = [set(splits.indices(n)) for n in ("d_s", "d_t", "d_r", "d_v")]
    assert [len(s) for s in sets] == [2, 3, 4, 5] and len(set.union(*sets)) == 14
    assert splits.split_of("d_r") == "train"


def test_held_back_test_images_are_disjoint_from_every_set(train, tmp_path):
    """CamVid without its test folder: d_test images of the source split become the test set."""
    splits = build_splits(train, dataclasses.replace(RECIPE, d_test=4), seed=0, progress=False)
    sets = {n: set(splits.indices(n)) for n in ("d_s", "d_t", "d_v", "test")}
    assert [len(sets[n]) for n in ("d_s", "d_t", "d_v", "test")] == [3, 5, 4, 4]
    assert set.union(*sets.values()) == set(range(16)) and splits.split_of("test") == "train"
    assert ALSplits.load(splits.save(tmp_path / "s.json")).indices("test", train) == sorted(sets["test"])
    with pytest.raises(ValueError, match=r"needs 8 labelled .* plus d_test 9 plus d_v the rest"):
        build_splits(train, dataclasses.replace(RECIPE, d_test=9), progress=False)


def test_presets():
    camvid, cityscapes = get_preset("camvid").al, get_preset("cityscapes").al
    assert (camvid.d_s, camvid.d_t, camvid.reward_split, camvid.test_split) == (10, 100, "val", "test")
    assert (cityscapes.d_s, cityscapes.d_t, cityscapes.d_r, cityscapes.test_split) == (10, 150, 200, "val")
    assert get_preset("gta5").al is None


def test_json_round_trip_and_checks(tmp_path, train):
    splits = build_splits(train, RECIPE, progress=False)
    path = splits.save(tmp_path / "splits.json")
    assert [p.name for p in tmp_path.iterdir()] == ["splits.json"]  # the temporary file is gone
    loaded = ALSplits.load(path)
    assert loaded.to_dict() == splits.to_dict()
    assert loaded.indices("d_s", train) == splits.indices("d_s")
    val = Streets("val", seed=1, num_images=3, progress=False)
    assert loaded.indices("d_r", val) == [0, 1, 2]
    with pytest.raises(ValueError, match="pass that data set"):
        loaded.indices("d_r")
    other = Streets("train", seed=2, num_images=16, cache=False)
    with pytest.raises(ValueError, match="different copy of the data"):
        loaded.indices("d_s", other)
    with pytest.raises(ValueError, match="is in streets/val"):
        loaded.check("d_r", train)


def test_leaky_or_broken_files_are_rejected(tmp_path, train):
    d = build_splits(train, RECIPE, progress=False).to_dict()
    d["sets"]["d_v"]["indices"].append(d["sets"]["d_s"]["indices"][0])  # the official Cityscapes leak
    d["sets"]["d_v"]["files"].append(d["sets"]["d_s"]["files"][0])
    (tmp_path / "leak.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="d_s and d_v share images"):
        ALSplits.load(tmp_path / "leak.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="cannot read split file"):
        ALSplits.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="missing"):
        ALSplits("streets", 0, {n: SplitSet("train", []) for n in SET_NAMES[:-1]})


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d["sets"]["d_t"].update(indices=[3, 3, 4]), r"sets\.d_t\.indices: expected distinct image indices"),
        (lambda d: d["sets"]["d_t"].update(indices=[1.5, 2]), r"sets\.d_t\.indices: expected a list of integer"),
        (lambda d: d["sets"]["d_t"].update(indices=[-1, 2]), r"sets\.d_t\.indices: expected image indices >= 0"),
        (lambda d: d["sets"]["d_t"].update(indices=[], files=[]), r"sets\.d_t\.indices: expected at least one"),
        (lambda d: d["sets"]["d_t"].update(files=["a.png"]), r"sets\.d_t\.files: expected one file name per index"),
        (lambda d: d["sets"].update(d_x={"split": "train"}), r"sets\.d_x: unknown set"),
        (lambda d: d["sets"].update(d_s=[1, 2]), r"sets\.d_s: expected \{'split'"),
        (lambda d: d.update(sets=[1]), r"'sets' must be an object"),
        (lambda d: d.update(seed="0"), r"'seed' an integer"),
        (lambda d: d.pop("format"), r"not a fastral split file: format None"),
    ],
)
def test_every_field_of_a_split_file_is_checked(tmp_path, train, damage, message):
    d = build_splits(train, RECIPE, progress=False).to_dict()
    damage(d)
    (tmp_path / "s.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=message):
        ALSplits.load(tmp_path / "s.json")


def test_a_split_file_that_is_a_json_list_is_refused(tmp_path):
    (tmp_path / "s.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a fastral split file: expected a JSON object, got list"):
        ALSplits.load(tmp_path / "s.json")


def test_recipe_errors(train):
    with pytest.raises(ValueError, match="needs 110 labelled"):
        build_splits(train, progress=False)  # the streets preset wants 110 labelled images; there are 16
    with pytest.raises(ValueError, match="draws from split 'train'"):
        build_splits(Streets("val", num_images=12, progress=False), RECIPE, progress=False)


def test_command_writes_a_loadable_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(SPLIT_SIZES, "train", 16)  # a small streets train split for the small recipe
    monkeypatch.setitem(PRESETS, "streets", dataclasses.replace(PRESETS["streets"], al=RECIPE))
    splits = splits_main(["--out", str(tmp_path / "splits.json"), "--seed", "2"])
    assert ALSplits.load(tmp_path / "splits.json").to_dict() == splits.to_dict()
    assert "d_s 3, d_t 5, d_r all of val, d_v 8, test all of test; KL(train || D_S)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", "-1"], "argument --seed: expected a seed in [0, 4294967295], got -1"),
        (["--streets-seed", "4294967296"], "argument --streets-seed: expected a seed in [0, 4294967295]"),
        (["--data-root", "/data"], "argument --data-root: streets is generated and takes no data root"),
    ],
)
def test_command_arguments_are_checked(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        splits_main([*argv, "--out", str(tmp_path / "s.json")])
    assert exc.value.code == 2 and message in capsys.readouterr().err and not (tmp_path / "s.json").exists()
