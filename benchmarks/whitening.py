"""Whitening fit + transform time: gradwise against scikit-learn's PCA(whiten=True).

100,000 x 784 float32 (MNIST-sized) correlated data, one thread for torch and for
NumPy's BLAS, min over repeats. gradwise computes the covariance, the eigenbasis and the
transform in float64 (its documented precision contract: float32 whitening done in float32
arithmetic was measured up to 2e-4 relative error on data with a mean of 100); scikit-learn
works in the input's float32. Every method does one covariance matmul and one eigh.

Run: .venv/bin/python benchmarks/whitening.py [--samples 100000] [--features 784] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.decomposition import PCA as SklearnPCA
from threadpoolctl import threadpool_limits

from gradwise.preprocess import PCAWhiten, ZCAWhiten


def make_data(samples: int, features: int) -> np.ndarray:
    """Pixel-like data: a mean near 0.5 and a spectrum decaying over three decades."""
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(features, features, generator=generator))
    spread = torch.logspace(0, -3, features)
    latent = torch.randn(samples, features, generator=generator)
    data = 0.5 + 0.1 * (latent * spread) @ basis.T
    return data.numpy().astype(np.float32)


def best_time(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=784)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = make_data(args.samples, args.features)
    tensor = torch.from_numpy(data)
    cases: dict[str, Callable[[], object]] = {
        "gradwise ZCAWhiten, numpy in/out": lambda: ZCAWhiten().fit_transform(data),
        "gradwise PCAWhiten, numpy in/out": lambda: PCAWhiten().fit_transform(data),
        "gradwise ZCAWhiten, tensor in/out": lambda: ZCAWhiten().fit_transform(tensor),
        "sklearn PCA(whiten=True)": lambda: SklearnPCA(whiten=True).fit_transform(data),
    }
    print(f"{args.samples} x {args.features} float32, 1 thread, min of {args.repeats}")
    with threadpool_limits(limits=1):
        for name, run in cases.items():
            print(f"  {name:<36} fit+transform {best_time(run, args.repeats):6.2f} s")


if __name__ == "__main__":
    main()
