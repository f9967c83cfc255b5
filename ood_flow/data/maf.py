"""Tabular benchmarks with the preprocessing of MAF, so that numbers compare with the literature.

References:
    Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density
    Estimation", NeurIPS 2017 (code: github.com/gpapamak/maf, ``datasets/``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ood_flow.data.dataset import Dataset, LoadRequest, row_ids, to_vectors
from ood_flow.data.download import missing_error
from ood_flow.data.tables import read_header, read_numbers
from ood_flow.errors import InputError

MINIBOONE_SAMPLE = Path("MINIBOONE") / "miniboone_maf_test_val.npz"


def maf_split(data: np.ndarray) -> dict[str, np.ndarray]:
    """MAF's split: the last 10% is test, the last 10% of the rest is validation."""
    n_test = int(0.1 * data.shape[0])
    test, rest = data[-n_test:], data[:-n_test]
    n_val = int(0.1 * rest.shape[0])
    return {"train": rest[:-n_val], "val": rest[-n_val:], "test": test}


def load_miniboone(req: LoadRequest) -> Dataset:
    """MiniBooNE particle identification (43 features) as MAF preprocessed it.

    From MAF's ``ROOT/miniboone/data.npy`` (outliers and features with many repeated
    values already removed): :func:`maf_split`, then, as MAF's code does, every split
    is standardised with the mean and standard deviation (ddof 0) of train and
    validation together. Else from the shared ``ROOT/MINIBOONE/miniboone_maf_test_val.npz``,
    which holds MAF's ``test`` and ``val`` splits already standardised that way.
    """
    data_npy = req.root / "miniboone" / "data.npy"
    sample = req.root / MINIBOONE_SAMPLE
    if data_npy.is_file():
        x, origin = _miniboone_from_data(data_npy, req.split), str(data_npy)
    elif sample.is_file():
        x, origin = _miniboone_from_sample(sample, req), f"{sample} (MAF test/val splits)"
    else:
        raise missing_error("miniboone", req.root, data_npy.parent, ["data.npy"],
                            " (MAF's preprocessed MiniBooNE, zenodo.org/record/1161203); no download exists here")
    x = x[: req.limit]
    return Dataset(x=to_vectors(x, origin), ids=row_ids(len(x)), labels=None, kind="vector",
                   name=f"miniboone-{req.split}", source=f"miniboone:{req.split} from {origin}")


def _miniboone_from_data(path: Path, split: str) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if data.ndim != 2 or len(data) < 100:
        raise InputError(f"{path}: expected MAF's MiniBooNE table (N, 43), found shape {data.shape}")
    splits = maf_split(data.astype(np.float64))
    both = np.vstack((splits["train"], splits["val"]))
    mu, s = both.mean(axis=0), both.std(axis=0)
    return (splits[split] - mu) / s


def _miniboone_from_sample(path: Path, req: LoadRequest) -> np.ndarray:
    if req.split == "train":
        raise InputError(f"miniboone: split 'train' not found under {req.root}; {path} holds only the test and "
                         f"val splits; put MAF's data.npy in {req.root / 'miniboone'}/ for train")
    with np.load(path, allow_pickle=False) as z:
        return z[req.split]


def load_hepmass(req: LoadRequest) -> Dataset:
    """HEPMASS signal events (UCI) as MAF preprocessed them.

    From ``ROOT/hepmass/1000_train.csv`` and ``1000_test.csv`` (header row; first
    column the label). As MAF's code does: keep rows with label 1 and drop the label;
    drop the last column of the test file (MAF: "the data set is messed up");
    standardise with the mean and standard deviation (ddof 1, pandas' default) of
    the training rows; drop every feature whose smallest value occurs more than 5
    times in the training rows (MAF counts the first entry of a value-sorted
    ``Counter``: the count of the minimum, which catches the discrete features);
    the last 10% of the training rows are the validation split. Test columns are
    matched to training columns by header name, as pandas does.
    """
    folder = req.root / "hepmass"
    paths = {"train": folder / "1000_train.csv", "test": folder / "1000_test.csv"}
    if not all(p.is_file() for p in paths.values()):
        raise missing_error("hepmass", req.root, folder, ["1000_train.csv", "1000_test.csv"],
                            " (UCI HEPMASS); no download exists here")
    names, train = _signal_rows(paths["train"], drop_last=False)
    mu, s = train.mean(axis=0), train.std(axis=0, ddof=1)
    keep = [j for j in range(train.shape[1]) if np.count_nonzero(train[:, j] == train[:, j].min()) <= 5]
    if req.split == "test":
        x = _hepmass_test(paths["test"], [names[j] for j in keep], mu[keep], s[keep])
    else:
        x = ((train[:, keep] - mu[keep]) / s[keep])
        n_val = int(0.1 * len(x))
        if n_val == 0:
            raise InputError(f"{paths['train']}: {len(x)} signal rows are too few for MAF's 10% validation split")
        x = x[-n_val:] if req.split == "val" else x[:-n_val]
    x = x[: req.limit]
    return Dataset(x=to_vectors(x, str(folder)), ids=row_ids(len(x)), labels=None, kind="vector",
                   name=f"hepmass-{req.split}", source=f"hepmass:{req.split} from {paths[_file_of(req.split)]}")


def _file_of(split: str) -> str:
    return "test" if split == "test" else "train"


def _signal_rows(path: Path, *, drop_last: bool) -> tuple[list[str], np.ndarray]:
    header = read_header(path)
    table = read_numbers(path, header, list(range(len(header))))
    end = len(header) - 1 if drop_last else len(header)
    return header[1:end], table[table[:, 0] == 1, 1:end]


def _hepmass_test(path: Path, names: list[str], mu: np.ndarray, s: np.ndarray) -> np.ndarray:
    test_names, test = _signal_rows(path, drop_last=True)
    absent = [n for n in names if n not in test_names]
    if absent:
        raise InputError(f"{path} lacks the training feature columns {', '.join(absent)}")
    return (test[:, [test_names.index(n) for n in names]] - mu) / s
