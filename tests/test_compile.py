"""torch.compile: the ops are torch.library custom ops (fastral::region_stats, fastral::kl_histogram,
fastral::bald), so a compiled scoring function keeps them in one graph (fullgraph=True) and gives the eager
results; argument errors still name the argument, value errors are still raised when the compiled code runs."""

import pytest
import torch

import fastral
from fastral import testing

OPS = ("region_stats", "kl_histogram", "bald")


def score(logits: torch.Tensor, mc: torch.Tensor, q: torch.Tensor, mask: torch.Tensor):
    """A user's scoring function: region statistics, KL histograms of the region class distributions, BALD."""
    stats = fastral.region_stats(logits, region=(8, 12), pool=(2, 3), ignore_mask=mask)
    p = stats.counts.float() + 1.0
    hist = fastral.kl_histogram(p, q, bins=7)
    hist_fixed = fastral.kl_histogram(p.unsqueeze(0), q, bins=5, range=(0.0, 2.0))
    out = fastral.bald(mc, region=(8, 12), ignore_mask=mask, sample_dim=-1)
    return (*stats, hist, hist_fixed, out.bald, out.entropy, out.region_bald, out.region_entropy)


def inputs(rng):
    logits = testing.logits((2, 5, 17, 26), rng)
    mc = testing.logits((2, 5, 17, 26, 4), rng, class_dim=1)
    q = torch.rand(9, 5, generator=rng)
    return logits, mc, q, testing.ignore_mask((2, 17, 26), rng)


@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_fullgraph_equals_eager(rng, compiler):
    torch._dynamo.reset()
    args = inputs(rng)
    expected = score(*args)
    compiled = torch.compile(score, fullgraph=True, backend=compiler)  # fullgraph: a graph break is an error
    names = ("counts", "pool", "mean", "hist", "hist_fixed", "bald", "entropy", "region_bald", "region_entropy")
    for actual, want, name in zip(compiled(*args), expected, names, strict=True):
        testing.assert_equal(actual, want, name)


@pytest.mark.parametrize("op", OPS)
def test_opcheck(rng, op):
    """torch.library.opcheck: the schema, the fake (meta) implementation against the real one, functionalization."""
    logits, mc, q, mask = inputs(rng)
    samples = {
        "region_stats": [(logits, [8, 12], [2, 3], True, mask, "auto"), (logits, [17, 26], [1, 1], True, None, "cpp")],
        "kl_histogram": [
            (q[:4], q, 6, None, False, 1e-7, "auto"),
            (q[None, :3], q, 4, [0.0, 1.0], False, 1e-7, "torch"),
            (q, q, 3, None, True, 1e-5, "auto"),
        ],
        "bald": [(mc, True, "auto", -1), (mc.movedim(-1, 0).contiguous(), True, "cpp", 0)],
    }[op]
    for args in samples:
        torch.library.opcheck(getattr(torch.ops.fastral, op).default, args)


def test_argument_errors_when_compiling(rng):
    """The fake implementations check the arguments: the error names them while compiling (fullgraph=True makes
    Dynamo wrap it in its own exception, whose message holds fastral's)."""
    logits, mc, q, _ = inputs(rng)
    torch._dynamo.reset()
    with pytest.raises(Exception, match=r"region_stats: argument 'region' \(30, 12\) is larger than the 17x26 image"):
        torch.compile(lambda x: fastral.region_stats(x, region=(30, 12)), fullgraph=True, backend="aot_eager")(logits)
    with pytest.raises(Exception, match="kl_histogram: arguments 'p' and 'q' must have the same number"):
        torch.compile(lambda p: fastral.kl_histogram(p, q[:, :3]), fullgraph=True, backend="aot_eager")(q)
    with pytest.raises(Exception, match="bald: argument 'sample_dim' must be 0"):
        torch.compile(lambda x: fastral.bald(x, sample_dim=2), fullgraph=True, backend="aot_eager")(mc)


def test_value_errors_when_compiled_code_runs(rng):
    """Non-finite scores are found by the op at run time, as in eager mode."""
    logits = inputs(rng)[0]
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: fastral.region_stats(x, region=8).counts, fullgraph=True, backend="aot_eager")
    compiled(logits)
    logits[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="region_stats: argument 'scores' contains NaN or infinite values"):
        compiled(logits)
