"""Build the demo samples shipped in ``ood_flow/data/samples/`` from a local data root.

Each sample is the first N images of an official split, in official order, saved as a
compressed npz with ``x`` uint8 (N, 28, 28) and ``y`` int64 (N,). The output is
deterministic: the same data root gives the same arrays.

Usage:
    python examples/make_demo_samples.py [--data-dir ../shared/data] [--out ood_flow/data/samples]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ood_flow.data import load_source
from ood_flow.data.registry import DEMO_FILES
from ood_flow.fileio import atomic_write

# (dataset, split) -> number of images; the file names come from the registry.
SIZES = {("fashionmnist", "train"): 3000, ("fashionmnist", "test"): 1000,
         ("mnist", "test"): 1000, ("notmnist", "test"): 1000}


def build(data_dir: str, out: Path) -> None:
    """Write every demo sample into ``out`` and print one line per file."""
    out.mkdir(parents=True, exist_ok=True)
    for (name, split), n in SIZES.items():
        ds = load_source(f"{name}:{split}", data_dir=data_dir, limit=n, download=False)
        target = out / DEMO_FILES[(name, split)]
        with atomic_write(target, overwrite=True) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, x=ds.x[:, 0].numpy(), y=ds.labels.astype(np.int64))
        print(f"{target}: {len(ds)} images from {ds.source}, {target.stat().st_size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                        help="root with MNIST/, FashionMNIST/, notMNIST/ (default: ../shared/data from the repository)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "ood_flow/data/samples")
    args = parser.parse_args()
    build(args.data_dir, args.out)


if __name__ == "__main__":
    main()
