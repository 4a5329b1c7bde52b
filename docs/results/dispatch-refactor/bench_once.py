"""One timing of the cpp backend on bench/workloads.py's CPU workloads; prints the median seconds per op as JSON.
Run alternately on two builds (see README.md): the medians of fresh processes compare the builds."""

import json
import time

import torch

import fastral

torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
frame = torch.randn(1, 19, 1024, 2048, generator=g) * 3
samples = torch.randn(20, 1, 19, 512, 1024, generator=g) * 3
rows = torch.rand(25600, 20, generator=g) ** 3


def median_seconds(fn, calls=5):
    fn()  # warm-up
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return sorted(seconds)[calls // 2]


def streamed():
    acc = fastral.BaldAccumulator(backend="cpp")
    for sample in samples:
        acc.update(sample)
    return acc.compute()


print(
    json.dumps(
        {
            "region_stats": median_seconds(lambda: fastral.region_stats(frame, 128, 8, backend="cpp")),
            "bald_stacked": median_seconds(lambda: fastral.bald(samples, backend="cpp")),
            "bald_streaming": median_seconds(streamed),
            "kl_histogram": median_seconds(lambda: fastral.kl_histogram(rows, rows, 32, backend="cpp"), calls=3),
        }
    )
)
