"""In-distribution bits/dim per feature dimension: mean, median and the largest distance from the median.

Usage: python bits_sanity.py SCORES.h5 GROUP [SCORES.h5 GROUP ...]
"""

import sys

import numpy as np

from ood_flow import store

for path, group in zip(sys.argv[1::2], sys.argv[2::2]):
    b = store.read_group(path, group)[0]["bits_per_dim"]
    print(f"{path} {group}: mean {b.mean():.3f}, median {np.median(b):.3f}, "
          f"largest distance from the median {np.abs(b - np.median(b)).max():.3f}, finite {np.isfinite(b).all()}")
