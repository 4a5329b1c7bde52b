"""Region BALD on baal's MC predictions [N, C, H, W, T]: baal's BALD + region mean, fastral on baal's layout
(fastral.integrations.baal.RegionBALD, read in place), and fastral on its own layout [T, N, C, H, W]; time and the
peak memory each adds.

The small case runs everywhere (CI: once, --benchmark-disable); the large one (4 x 19 x 512 x 1024 x 20 = 3.1 GiB of
logits; baal's BALD alone adds ~9 GiB) only with FASTRAL_BENCH_LARGE=1.
"""

import os

import numpy as np
import pytest
from harness import peak_bytes_added, run

pytest.importorskip("baal")

CASES = {
    "small": ((4, 19, 128, 256, 20), (32, 32)),
    "large": ((4, 19, 512, 1024, 20), (128, 128)),
}

# Code shared by the timed functions and the peak-memory probes (which run it in a fresh process).
SETUP = """
import numpy as np
import fastral
from baal.active.heuristics import BALD
from fastral.integrations.baal import RegionBALD

def baal_region_bald(x, region):
    scores = BALD().compute_score(x)  # [N, H, W], baal's numpy/scipy BALD
    n, h, w = scores.shape
    ny, nx = h // region[0], w // region[1]
    return scores[:, : ny * region[0], : nx * region[1]].reshape(n, ny, region[0], nx, region[1]).mean((2, 4)).ravel()

def fastral_baal_layout(x, region):
    return RegionBALD(region=region, from_logits=True).get_uncertainties(x)

def fastral_native(x_native, region):
    return fastral.bald(x_native, region=region).region_bald

shape, region = {shape}, {region}
x = (np.random.default_rng(0).standard_normal(shape, dtype=np.float32) * 3)
x_native = np.ascontiguousarray(np.moveaxis(x, -1, 0)) if {native} else None
"""

PROVIDERS = {
    "baal BALD + region mean": ("baal_region_bald(x, region)", False),
    "fastral RegionBALD on baal's layout": ("fastral_baal_layout(x, region)", False),
    "fastral bald on [T, N, C, H, W]": ("fastral_native(x_native, region)", True),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    if request.param == "large" and os.environ.get("FASTRAL_BENCH_LARGE") != "1":
        pytest.skip("the large case (3.1 GiB input, ~13 GiB peak for baal) runs with FASTRAL_BENCH_LARGE=1")
    shape, region = CASES[request.param]
    namespace = {}
    exec(SETUP.format(shape=shape, region=region, native=True), namespace)
    namespace["expected"] = namespace["baal_region_bald"](namespace["x"], region)
    return request.param, namespace


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_region_bald_on_baal_predictions(benchmark, machine, case, provider):
    name, ns = case
    call, native = PROVIDERS[provider]
    shape, region = CASES[name]
    out = run(
        benchmark,
        machine,
        f"region BALD {name} {list(shape)} f32 logits, {region} regions",
        provider,
        lambda: eval(call, ns),
        bytes_read=ns["x"].nbytes,
    )
    np.testing.assert_allclose(out, ns["expected"], rtol=1e-4, atol=1e-5)
    if not benchmark.disabled:  # the peak memory of one call, in a fresh process (input and imports excluded)
        setup = SETUP.format(shape=shape, region=region, native=native)
        benchmark.extra_info["peak_mib_added"] = peak_bytes_added(setup, call) / 2**20
