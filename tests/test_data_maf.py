"""MiniBooNE and HEPMASS with MAF's preprocessing (ood_flow/data/maf.py), on small fake roots."""

from __future__ import annotations

import numpy as np
import pytest

from ood_flow.data import load_source
from ood_flow.errors import InputError

RNG = np.random.default_rng(0)


def test_miniboone_maf_split_and_standardisation(tmp_path):
    (tmp_path / "miniboone").mkdir()
    data = RNG.normal(loc=3.0, scale=2.0, size=(1000, 4))
    np.save(tmp_path / "miniboone" / "data.npy", data)
    parts = {s: load_source(f"miniboone:{s}", data_dir=str(tmp_path)).x.double().numpy()
             for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [810, 90, 100]
    both = np.vstack((data[:810], data[810:900]))
    assert np.allclose(parts["test"], (data[900:] - both.mean(0)) / both.std(0), atol=1e-5)
    assert np.allclose(np.vstack((parts["train"], parts["val"])).mean(0), 0, atol=1e-5)


def test_miniboone_shared_sample_has_no_train(tmp_path):
    (tmp_path / "MINIBOONE").mkdir()
    np.savez(tmp_path / "MINIBOONE" / "miniboone_maf_test_val.npz", test=np.ones((5, 43)), val=np.ones((4, 43)))
    assert tuple(load_source("miniboone:val", data_dir=str(tmp_path)).x.shape) == (4, 43)
    with pytest.raises(InputError, match="only the test and val splits"):
        load_source("miniboone", data_dir=str(tmp_path))


def write_hepmass(root, n=60):
    """Label + 4 features (f2 discrete) + mass; the test file has one extra trailing column."""
    folder = root / "hepmass"
    folder.mkdir()
    tables = {}
    for name, extra in (("1000_train.csv", False), ("1000_test.csv", True)):
        label = np.arange(n) % 3 != 0
        cols = [label.astype(float), RNG.normal(size=n), RNG.normal(size=n), RNG.integers(0, 2, n).astype(float),
                RNG.normal(size=n), np.full(n, 1000.0)] + ([RNG.normal(size=n)] if extra else [])
        table = np.stack(cols, axis=1)
        header = "# label,f0,f1,f2,f3,mass" + (",junk" if extra else "")
        np.savetxt(folder / name, table, delimiter=",", header=header, comments="")
        tables[name] = table[label]
    return tables


def test_hepmass_maf_preprocessing(tmp_path):
    tables = write_hepmass(tmp_path)
    train_rows = tables["1000_train.csv"][:, [1, 2, 4]]  # f2 (discrete) and mass (constant) are dropped
    mu, s = train_rows.mean(0), train_rows.std(0, ddof=1)
    train = load_source("hepmass:train", data_dir=str(tmp_path)).x.double().numpy()
    val = load_source("hepmass:val", data_dir=str(tmp_path)).x.double().numpy()
    test = load_source("hepmass:test", data_dir=str(tmp_path)).x.double().numpy()
    assert train.shape == (36, 3) and val.shape == (4, 3) and test.shape == (40, 3)
    assert np.allclose(np.vstack((train, val)), (train_rows - mu) / s, atol=1e-5)
    assert np.allclose(test, (tables["1000_test.csv"][:, [1, 2, 4]] - mu) / s, atol=1e-5)


def test_tabular_missing_files_say_where(tmp_path):
    with pytest.raises(InputError, match=rf"hepmass: not found under {tmp_path}; put 1000_train.csv, 1000_test.csv"):
        load_source("hepmass:test", data_dir=str(tmp_path))
    with pytest.raises(InputError, match=r"miniboone: not found .*put data.npy in"):
        load_source("miniboone:test", data_dir=str(tmp_path))
