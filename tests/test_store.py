"""Score files and features files: round trips, errors, atomicity."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from ood_flow import store
from ood_flow.errors import OutputError, ScoreFileError

ATTRS = {
    "source": "mnist:test",
    "model": "runs/fmnist.pt",
    "model_sha256": "ab" * 32,
    "method": ["log_likelihood", "bits_per_dim"],
    "seed": 0,
    "dequantization": "uniform",
    "oodflow_version": "0.1.0",
    "time": "2024-05-01T12:00:00+00:00",
    "batchnorm_eval": True,
    "temperature": 0.7,
    "config": {"flow": "realnvp", "masks": ["checkerboard", "channel"], "hidden": 64},
    "note": None,
}


def arrays(n=5, seed=0):
    rng = np.random.default_rng(seed)
    ll = rng.normal(-800, 50, n)
    return {
        "log_likelihood": ll,
        "bits_per_dim": -ll / (784 * np.log(2)),
        "log_prior": rng.normal(size=n).astype(np.float32),
        "log_det": rng.normal(size=n),
        "id": [f"img_{i}.png" for i in range(n)],
        "label": np.arange(n, dtype=np.int64),
    }


@pytest.fixture
def scores(tmp_path):
    path = tmp_path / "scores.h5"
    store.write_group(path, "fmnist-test", arrays(5, 0), ATTRS)
    store.write_group(path, "mnist-test", arrays(7, 1), ATTRS)
    return path


def leftovers(folder):
    return [p for p in os.listdir(folder) if p.endswith(".tmp")]


# ---------------------------------------------------------------- round trips


def test_round_trip_is_bit_identical(tmp_path):
    path = tmp_path / "s.h5"
    data = arrays(6)
    data["log_likelihood"][2] = -np.inf
    store.write_group(path, "g", data, ATTRS)
    got, attrs = store.read_group(path, "g")
    assert list(got) == list(data)
    for key in ("log_likelihood", "bits_per_dim", "log_prior", "log_det", "label"):
        assert got[key].dtype == np.asarray(data[key]).dtype
        assert got[key].tobytes() == np.asarray(data[key]).tobytes()
    assert got["id"].dtype.kind == "U" and list(got["id"]) == data["id"]
    assert attrs == ATTRS


def test_unicode_ids_and_attrs(tmp_path):
    path = tmp_path / "s.h5"
    ids = np.array(["ünïcode/ファイル.png", "", "emoji 🙂.jpg"])
    store.write_group(path, "g", {"id": ids, "log_likelihood": np.zeros(3)}, {"source": "Größe ✓"})
    got, attrs = store.read_group(path, "g")
    assert got["id"].tolist() == ids.tolist()
    assert attrs["source"] == "Größe ✓"


def test_integer_ids_are_stored_as_strings(tmp_path):
    path = tmp_path / "s.h5"
    store.write_group(path, "g", {"id": np.arange(3), "log_likelihood": np.zeros(3)}, {})
    assert store.read_group(path, "g")[0]["id"].tolist() == ["0", "1", "2"]


def test_readable_by_plain_h5py(scores):
    with h5py.File(scores, "r") as f:
        assert f.attrs["oodflow_format"] == "scores"
        assert f.attrs["oodflow_format_version"] == 1
        g = f["mnist-test"]
        assert g["log_likelihood"].dtype == np.float64 and g["log_likelihood"].shape == (7,)
        assert g["id"].asstr()[0] == "img_0.png"
        assert h5py.check_string_dtype(g["id"].dtype).encoding == "utf-8"
        assert g.attrs["source"] == "mnist:test"
        assert list(g.attrs["method"]) == ["log_likelihood", "bits_per_dim"]
        assert g.attrs["config"] == '{"flow": "realnvp", "masks": ["checkerboard", "channel"], "hidden": 64}'
        assert list(g.attrs["oodflow_json_attrs"]) == ["config", "note"]


def test_groups_listed_in_creation_order(tmp_path):
    path = tmp_path / "s.h5"
    for name in ("zeta", "alpha", "mid"):
        store.write_group(path, name, {"log_likelihood": np.zeros(2)}, {})
    assert store.list_groups(path) == ["zeta", "alpha", "mid"]


def test_append_keeps_other_groups(scores):
    before = store.read_group(scores, "fmnist-test")
    store.write_group(scores, "cifar", arrays(4, 2), {"source": "cifar10"})
    after = store.read_group(scores, "fmnist-test")
    assert store.list_groups(scores) == ["fmnist-test", "mnist-test", "cifar"]
    assert after[1] == before[1]
    for key in before[0]:
        assert after[0][key].tobytes() == before[0][key].tobytes()


def test_duplicate_group_is_an_error_and_leaves_file(scores):
    raw = scores.read_bytes()
    with pytest.raises(FileExistsError,
                       match=r"scores\.h5: group 'mnist-test' exists; pass overwrite=True to replace it"):
        store.write_group(scores, "mnist-test", arrays(3), {})
    assert scores.read_bytes() == raw


def test_overwrite_replaces_in_place_and_reclaims_space(scores):
    kept = store.read_group(scores, "mnist-test")
    for seed in range(5):
        store.write_group(scores, "fmnist-test", arrays(3, 10 + seed), {"source": "new"}, overwrite=True)
    got, attrs = store.read_group(scores, "fmnist-test")
    assert attrs == {"source": "new"}
    assert got["log_likelihood"].tobytes() == arrays(3, 14)["log_likelihood"].tobytes()
    assert store.list_groups(scores) == ["fmnist-test", "mnist-test"]
    again = store.read_group(scores, "mnist-test")
    assert again[1] == kept[1] and all(again[0][k].tobytes() == kept[0][k].tobytes() for k in kept[0])
    with h5py.File(scores, "r") as f:
        assert list(f["mnist-test"]) == list(arrays(1))  # dataset order survives the copy
    size_once = os.path.getsize(scores)
    store.write_group(scores, "fmnist-test", arrays(3, 14), {"source": "new"}, overwrite=True)
    assert os.path.getsize(scores) <= size_once


def test_read_scores(scores):
    np.testing.assert_array_equal(store.read_scores(scores, "mnist-test"), arrays(7, 1)["log_likelihood"])
    assert store.read_scores(scores, "mnist-test", "bits_per_dim").shape == (7,)


def test_add_datasets(scores):
    other = store.read_group(scores, "fmnist-test")
    is_ood = np.array([True, False, True, False, False, True, True])
    store.add_datasets(scores, "mnist-test", {"is_ood": is_ood}, {"threshold": -812.5, "gate": {"tpr": 0.95}})
    got, attrs = store.read_group(scores, "mnist-test")
    assert got["is_ood"].dtype == bool and got["is_ood"].tolist() == is_ood.tolist()
    assert attrs["threshold"] == -812.5 and attrs["gate"] == {"tpr": 0.95} and attrs["config"] == ATTRS["config"]
    assert store.read_group(scores, "fmnist-test")[1] == other[1]
    with pytest.raises(FileExistsError, match="dataset 'is_ood' of group 'mnist-test' exists; pass overwrite=True"):
        store.add_datasets(scores, "mnist-test", {"is_ood": ~is_ood})
    with pytest.raises(FileExistsError, match="attribute 'threshold' of group"):
        store.add_datasets(scores, "mnist-test", {}, {"threshold": 0.0})
    store.add_datasets(scores, "mnist-test", {"is_ood": ~is_ood}, {"gate": "plain"}, overwrite=True)
    got, attrs = store.read_group(scores, "mnist-test")
    assert got["is_ood"].tolist() == (~is_ood).tolist()
    assert attrs["gate"] == "plain"  # no longer decoded as JSON
    with pytest.raises(ValueError, match="has 7 samples"):
        store.add_datasets(scores, "mnist-test", {"extra": np.zeros(6)})


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("name", ["", "a/b", "."])
def test_bad_group_names(tmp_path, name):
    with pytest.raises(ValueError, match="invalid group name"):
        store.write_group(tmp_path / "s.h5", name, {"log_likelihood": np.zeros(2)}, {})
    assert not (tmp_path / "s.h5").exists()


def test_unequal_lengths(tmp_path):
    with pytest.raises(ValueError, match="same length"):
        store.write_group(tmp_path / "s.h5", "g", {"log_likelihood": np.zeros(3), "id": ["a", "b"]}, {})


def test_unstorable_values(tmp_path):
    with pytest.raises(ValueError, match="attribute 'x': cannot store a object"):
        store.write_group(tmp_path / "s.h5", "g", {"log_likelihood": np.zeros(2)}, {"x": object()})
    with pytest.raises(ValueError, match="only strings"):
        store.write_group(tmp_path / "s.h5", "g", {"name": np.array(["a", 1], dtype=object)}, {})
    with pytest.raises(ValueError, match="reserved"):
        store.write_group(tmp_path / "s.h5", "g", {"log_likelihood": np.zeros(2)}, {"oodflow_format": "x"})


# ---------------------------------------------------------------- bad files


def test_missing_file(tmp_path):
    with pytest.raises(ScoreFileError, match=r"nope\.h5: no such file"):
        store.read_group(tmp_path / "nope.h5", "g")


def test_missing_group_lists_groups(scores):
    with pytest.raises(ScoreFileError, match="no group 'svhn'; groups present: fmnist-test, mnist-test"):
        store.read_group(scores, "svhn")
    with pytest.raises(ScoreFileError, match="no group 'svhn'"):
        store.add_datasets(scores, "svhn", {"is_ood": np.zeros(7, bool)})


def test_missing_score_lists_scores(scores):
    with pytest.raises(ScoreFileError,
                       match="has no score 'odin'; scores present: log_likelihood, bits_per_dim, log_prior, log_det"):
        store.read_scores(scores, "mnist-test", "odin")
    with pytest.raises(ScoreFileError, match="has no score 'id'"):
        store.read_scores(scores, "mnist-test", "id")


def test_foreign_hdf5_file(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(3)
    raw = path.read_bytes()
    for call in (lambda: store.read_group(path, "data"), lambda: store.list_groups(path),
                 lambda: store.write_group(path, "g", {"log_likelihood": np.zeros(2)}, {})):
        with pytest.raises(ScoreFileError, match=r"^.*x\.h5: not an oodflow score file$"):
            call()
    assert path.read_bytes() == raw


def test_text_file(tmp_path):
    path = tmp_path / "x.h5"
    path.write_text("id,log_likelihood\na,1.0\n")
    with pytest.raises(ScoreFileError, match=r"x\.h5: not an HDF5 file \(or truncated\)"):
        store.list_groups(path)
    with pytest.raises(ScoreFileError, match="not an HDF5 file"):
        store.write_group(path, "g", {"log_likelihood": np.zeros(2)}, {})
    assert path.read_text() == "id,log_likelihood\na,1.0\n"


def test_truncated_file(scores, tmp_path):
    raw = scores.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ScoreFileError, match=r"cut\.h5: not an HDF5 file \(or truncated\)"):
        store.read_group(cut, "mnist-test")


def test_features_file_is_not_a_score_file(tmp_path):
    path = tmp_path / "f.h5"
    store.write_features(path, np.zeros((2, 3)), ids=["a", "b"], attrs={})
    with pytest.raises(ScoreFileError, match=r"f\.h5: an oodflow features file, not a score file"):
        store.list_groups(path)


def test_newer_format_version(scores):
    with h5py.File(scores, "r+") as f:
        f.attrs["oodflow_format_version"] = 2
    with pytest.raises(ScoreFileError, match="format version 2 is newer"):
        store.list_groups(scores)


# ---------------------------------------------------------------- atomicity


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("overwrite", [False, True])
def test_interrupted_write_leaves_file_unchanged(scores, monkeypatch, exc, overwrite):
    raw = scores.read_bytes()
    real = store._write_dataset
    calls = []

    def flaky(group, key, a):
        calls.append(key)
        if len(calls) == 3:
            raise exc("boom")
        real(group, key, a)

    monkeypatch.setattr(store, "_write_dataset", flaky)
    with pytest.raises(KeyboardInterrupt if exc is KeyboardInterrupt else OutputError):  # OutputError names the file
        store.write_group(scores, "fmnist-test" if overwrite else "new", arrays(4), ATTRS, overwrite=overwrite)
    assert len(calls) == 3
    assert scores.read_bytes() == raw
    assert leftovers(scores.parent) == []


def test_failed_rename_leaves_file_unchanged(scores, monkeypatch):
    raw = scores.read_bytes()

    def no_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(KeyboardInterrupt):
        store.add_datasets(scores, "mnist-test", {"is_ood": np.zeros(7, bool)})
    assert scores.read_bytes() == raw
    assert leftovers(scores.parent) == []


def test_interrupted_first_write_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_set_attrs", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        store.write_group(tmp_path / "s.h5", "g", {"log_likelihood": np.zeros(2)}, {})
    assert os.listdir(tmp_path) == []
