"""Packaging: the featurizers without the [al] extra, the CLIs naming that extra, and the project metadata."""

import subprocess
import sys
import textwrap

import pytest
from _data_helpers import REPO

from fastral._extras import AL_EXTRA, DISTRIBUTION

tomllib = pytest.importorskip("tomllib")

# Run first in a child interpreter: makes every package of the [al] extra unimportable, as on a featurizer-only install.
BLOCK_AL_EXTRA = textwrap.dedent(
    f"""
    import importlib.abc, sys

    class BlockAlExtra(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in {sorted(AL_EXTRA)!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)

    sys.meta_path.insert(0, BlockAlExtra())
    """
)


def run_without_al_extra(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_AL_EXTRA + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_featurizers_work_without_the_al_extra():
    result = run_without_al_extra(
        """
        import numpy as np, torch, fastral
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(2, 4, 16, 16)).astype(np.float32)
        assert fastral.region_stats(logits, region=8, pool=2).counts.shape == (8, 4)
        mask = np.zeros((2, 16, 16), np.uint8)  # a uint8 mask, nonzero = ignore
        mask[0, :8, :8] = 255
        out = fastral.bald(np.stack([logits, -logits]), region=8, ignore_mask=mask)
        assert out.region_bald.shape == (8,) and out.region_bald[0] == 0
        assert fastral.kl_histogram(rng.random((5, 4)), rng.random((7, 4)), bins=4).shape == (5, 4)
        acc = fastral.BaldAccumulator()
        acc.update(torch.from_numpy(logits))
        assert acc.compute(region=8).region_bald.shape == (8,)
        print(sorted(m for m in sys.modules if m.split(".")[0] in {"h5py", "PIL", "matplotlib", "scipy"}))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["fastral.run", "fastral.train"])
def test_the_clis_name_the_al_extra_when_it_is_missing(command):
    result = run_without_al_extra(f"import runpy; runpy.run_module({command!r}, run_name='__main__')")
    assert result.returncode == 1
    assert f"python -m {command} needs fastral's [al] extra, and " in result.stderr
    assert f'pip install "{DISTRIBUTION}[al]"' in result.stderr


def test_project_metadata():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION == "fastral-al"  # `fastral` on PyPI is an unrelated project
    assert project["license"] == "Apache-2.0"
    assert "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0" in (REPO / "LICENSE").read_text()
    torch_requirement = next(r for r in project["dependencies"] if r.startswith("torch"))
    assert torch_requirement == "torch>=2.3"  # no upper cap: an installed newer torch is used as it is
    assert {r.split(">")[0] for r in project["dependencies"]} == {"torch", "numpy"}
    assert {r.split(">")[0] for r in project["optional-dependencies"]["al"]} == set(AL_EXTRA.values())
    assert any(r.startswith("baal") for r in project["optional-dependencies"]["baal"])
