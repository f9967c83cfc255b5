"""Sources read as a stream: the same rows, order, ids and skipped files as reading them whole, in
fixed-size batches, decoded lazily, with per-image conversion for models and backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ood_flow.data import load_source, open_source
from ood_flow.data.conform import conform, conform_source
from ood_flow.data.images import read_image
from ood_flow.errors import InputError


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    """23 gray 8x6 PNGs in two sub-folders, three corrupt files among them, and a text file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for i in range(23):
        _png(root / f"d{i % 2}" / f"{i:03d}.png", rng.integers(0, 256, (8, 6)))
    for name in ("d0/004.png", "d1/011.png", "d0/020.png"):
        (root / name).write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    (root / "notes.txt").write_text("ignored")
    return root


def _expected(root, limit=None):
    """What reading the folder must give, computed here with PIL alone: readable files in path order."""
    paths = sorted((p for p in root.rglob("*.png")), key=lambda p: p.as_posix())
    rows, ids, skipped = [], [], []
    for p in paths:
        if limit is not None and len(rows) == limit:
            break
        try:
            with Image.open(p) as img:
                rows.append(np.asarray(img.convert("L"))[None])
                ids.append(str(p))
        except OSError:
            skipped.append(str(p))
    return np.stack(rows), ids, skipped


def _read(src, batch_size, workers, transform=None):
    batches = list(src.batches(batch_size, transform, workers=workers))
    return batches, torch.cat([b.x for b in batches]), [i for b in batches for i in b.ids]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("batch_size,limit", [(4, None), (7, 12), (64, None), (5, 5)])
def test_batches_give_the_rows_order_ids_and_skips_of_the_files(folder, workers, batch_size, limit):
    src = open_source(str(folder), skip_invalid=True, limit=limit)
    batches, x, ids = _read(src, batch_size, workers, transform=lambda t: t)
    want_x, want_ids, want_skipped = _expected(folder, limit)
    assert ids == want_ids and np.array_equal(x.numpy(), want_x)
    assert [p for p, _ in src.skipped] == want_skipped and all(reason for _, reason in src.skipped)
    assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1) and 0 < len(batches[-1]) <= batch_size
    whole = load_source(str(folder), skip_invalid=True, limit=limit)
    assert list(whole.ids) == want_ids and np.array_equal(whole.x.numpy(), want_x)
    assert [p for p, _ in whole.skipped] == want_skipped


def test_an_unreadable_file_is_an_error_naming_it_without_skip_invalid(folder):
    with pytest.raises(InputError, match=r"004\.png.*--skip-invalid"):
        list(open_source(str(folder)).batches(4, lambda t: t, workers=2))


def test_files_are_decoded_as_they_are_read_not_up_front(folder, monkeypatch):
    decoded = []

    def counting(path):
        decoded.append(path)
        return read_image(path)

    src = open_source(str(folder), skip_invalid=True)
    src.decode = counting
    first = next(iter(src.batches(4, lambda t: t, workers=0)))
    assert len(first) == 4 and len(decoded) <= 8  # one chunk (plus the one that filled the batch), not 23 files


def test_rows_in_memory_batch_in_order_with_labels():
    src = open_source("demo-mnist:test", limit=300)
    batches = list(src.batches(128))
    assert [len(b) for b in batches] == [128, 128, 44]
    ds = load_source("demo-mnist:test", limit=300)
    assert torch.equal(torch.cat([b.x for b in batches]), ds.x)
    assert np.array_equal(np.concatenate([b.labels for b in batches]), ds.labels)
    assert list(np.concatenate([b.ids for b in batches])) == list(ds.ids)


@pytest.mark.parametrize("workers", [0, 2])
def test_per_image_conversion_equals_converting_the_loaded_images(tmp_path, workers):
    rng = np.random.default_rng(1)
    for i in range(9):
        _png(tmp_path / f"{i}.png", rng.integers(0, 256, (40, 30, 3)))
    flags = {"resize": True, "grayscale": True}
    want = conform(load_source(str(tmp_path)), (1, 28, 28), **flags).x
    src, transform = conform_source(open_source(str(tmp_path)), (1, 28, 28), **flags)
    assert torch.equal(_read(src, 4, workers, transform)[1], want)
    assert "converted to 1x28x28" in src.source


def test_a_folder_of_mixed_sizes_streams_with_resize_and_names_the_file_without(tmp_path):
    rng = np.random.default_rng(2)
    _png(tmp_path / "a.png", rng.integers(0, 256, (28, 28)))
    _png(tmp_path / "b.png", rng.integers(0, 256, (50, 40, 3)))  # colour, another size
    src, transform = conform_source(open_source(str(tmp_path)), (3, 28, 28), resize=True)
    x = _read(src, 8, 0, transform)[1]
    assert x.shape == (2, 3, 28, 28) and torch.equal(x[0, 0], x[0, 2])  # grey repeated to RGB
    src, transform = conform_source(open_source(str(tmp_path)), (3, 28, 28))
    with pytest.raises(InputError, match=r"b\.png: image is 3x50x40 but the model expects 3x28x28; pass --resize"):
        list(src.batches(8, transform, workers=0))
    with pytest.raises(InputError, match=r"b\.png is 40x50 but .*a\.png is 28x28"):
        load_source(str(tmp_path))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_backbone_transform_of_a_mixed_folder_equals_transforming_each_image_alone(tmp_path, workers):
    """Files of one shape are transformed together in a worker: the same numbers as one at a time, in order."""
    from pathlib import Path

    from ood_flow.embed.extract import ImageTransform

    rng = np.random.default_rng(4)
    shapes = [(28, 28), (40, 30, 3), (28, 28), (28, 28), (40, 30, 3), (16, 20), (28, 28)]
    for i, shape in enumerate(shapes):
        _png(tmp_path / f"{i}.png", rng.integers(0, 256, shape))
    t = ImageTransform(size=12, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), interpolation="bicubic")
    for batch_size in (3, 4, 7):  # chunks of one shape and of several
        batches, x, ids = _read(open_source(str(tmp_path)), batch_size, workers, t)
        want = torch.cat([t(torch.from_numpy(read_image(Path(i))[0])[None]) for i in ids])
        assert ids == [str(tmp_path / f"{i}.png") for i in range(7)]
        assert torch.equal(x, want)
        assert all(b.x.is_contiguous(memory_format=torch.channels_last) for b in batches)


def test_an_image_the_transform_refuses_is_named_among_others_of_its_shape(tmp_path):
    from ood_flow.embed.extract import ImageTransform

    rng = np.random.default_rng(5)
    for i in range(6):
        _png(tmp_path / f"{i}.png", rng.integers(0, 256, (8, 8)))

    def two_channels_for_3(path):  # no decoder here makes such images; a stand-in for one that would
        a, reason = read_image(path)
        return (np.concatenate([a, a]) if path.name == "3.png" else a), reason

    t = ImageTransform(size=4, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear")
    src = open_source(str(tmp_path), skip_invalid=True)
    src.decode = two_channels_for_3
    with pytest.raises(InputError, match=r"3\.png: images have 2 channels"):
        list(src.batches(6, t, workers=0))
    src = open_source(str(tmp_path), limit=3)  # the cut comes before it: nothing to refuse
    src.decode = two_channels_for_3
    assert len(torch.cat([b.x for b in src.batches(6, t, workers=0)])) == 3


def test_rows_in_memory_get_conform_messages_before_reading():
    src = open_source("demo-mnist:test", limit=10)
    with pytest.raises(InputError, match="images are 1x28x28 but the model expects 3x32x32; pass --resize and --rgb"):
        conform_source(src, (3, 32, 32))
    out, transform = conform_source(src, (3, 32, 32), resize=True, rgb=True)
    want = conform(load_source("demo-mnist:test", limit=10), (3, 32, 32), resize=True, rgb=True)
    assert torch.equal(torch.cat([b.x for b in out.batches(4, transform, workers=0)]), want.x)
    assert out.source == want.source


def test_class_selection_and_limit_on_files_with_labels(tmp_path):
    from ood_flow.data.images import files_source
    from ood_flow.data.source import _first, _select_class

    rng = np.random.default_rng(3)
    paths = []
    for i in range(10):
        _png(tmp_path / f"{i}.png", rng.integers(0, 256, (4, 4)))
        paths.append(tmp_path / f"{i}.png")
    src = files_source(paths, where="t", name="t", source="t", limit=None, skip_invalid=False,
                       labels=np.arange(10) % 3, label_names=["x", "y", "z"])
    picked = _first(_select_class(src, "y"), 2)
    ds = picked.load()
    assert [p.rsplit("/", 1)[-1] for p in ds.ids] == ["1.png", "4.png"] and list(ds.labels) == [1, 1]
    assert picked.source == "t [class y]"


def test_reading_a_folder_whole_holds_no_file_descriptor_per_image(tmp_path):
    """Images decoded in worker processes arrive in shared memory, one segment (and open file) each;
    reading a folder whole copies them out, so more images than the open-file limit still load."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    for i in range(300):
        _png(tmp_path / "many" / f"{i:03d}.png", rng.integers(0, 256, (6, 5)))
    # chunks of 2 images: 150 chunks, so keeping one open segment per chunk would pass the limit of 100 too
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (100, resource.getrlimit("
              "resource.RLIMIT_NOFILE)[1])); import ood_flow.data.stream as s; s.LOAD_CHUNK = 2; "
              "from ood_flow.data import open_source; d = open_source(sys.argv[1]).load(workers=2); "
              "print(tuple(d.x.shape), d.ids[-1].endswith('299.png'))")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "many")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-400:]
    assert out.stdout.split() == ["(300,", "1,", "6,", "5)", "True"]


def test_workers_none_on_two_cores_half_the_cores_above_and_the_environment_overrides(monkeypatch):
    import os

    from ood_flow.data.stream import default_workers
    from ood_flow.errors import UsageError

    monkeypatch.delenv("OODFLOW_WORKERS", raising=False)
    for cores, want in ((1, 0), (2, 0), (3, 1), (4, 2), (32, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, cores=cores: set(range(cores)), raising=False)
        assert default_workers() == want, cores
    monkeypatch.setenv("OODFLOW_WORKERS", " 3 ")
    assert default_workers() == 3
    for bad in ("-1", "two", "1.5", "\u00b2"):
        monkeypatch.setenv("OODFLOW_WORKERS", bad)
        with pytest.raises(UsageError, match="OODFLOW_WORKERS"):
            default_workers()


def test_a_bad_worker_count_in_the_environment_is_a_usage_error_in_one_line(folder, tmp_path, monkeypatch):
    from cli_helpers import TRAIN_SMALL, one_line_error, run

    monkeypatch.setenv("OODFLOW_WORKERS", "many")
    result = run("train", "--data", folder, "--skip-invalid", "--out", tmp_path / "m.pt", *TRAIN_SMALL, code=2)
    one_line_error(result, "OODFLOW_WORKERS='many'")
    assert not (tmp_path / "m.pt").exists()


def test_files_are_transformed_in_runs_of_bounded_size_with_the_same_numbers(tmp_path, monkeypatch):
    """A chunk of large photos is not converted to float all at once: runs stop at RUN_VALUES input values."""
    from pathlib import Path

    from ood_flow.data import workers
    from ood_flow.embed.extract import ImageTransform

    rng = np.random.default_rng(6)
    for i in range(8):
        _png(tmp_path / f"{i}.png", rng.integers(0, 256, (28, 28)))
    t = ImageTransform(size=12, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), interpolation="bicubic")
    seen = []

    class Counting:
        def __call__(self, x, out=None):
            seen.append(len(x))
            return t(x, out=out)

        def output_shape(self, n):
            return t.output_shape(n)

    monkeypatch.setattr(workers, "RUN_VALUES", 3 * 28 * 28)
    _, x, ids = _read(open_source(str(tmp_path)), 8, 0, Counting())
    assert seen == [3, 3, 2]
    assert torch.equal(x, torch.cat([t(torch.from_numpy(read_image(Path(i))[0])[None]) for i in ids]))


def test_the_oodflow_command_refuses_a_bad_worker_count_before_any_command_runs():
    import os
    import subprocess
    import sys

    env = {**os.environ, "OODFLOW_WORKERS": "-2"}
    result = subprocess.run([sys.executable, "-m", "ood_flow", "info", "demo-mnist:test"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "error: OODFLOW_WORKERS='-2': expected a whole number of worker processes (0 or more)\n"


def test_the_reason_a_file_is_unreadable_keeps_its_quotes_balanced(folder):
    a, reason = read_image(folder / "d0" / "004.png")
    assert a is None and reason.startswith("cannot identify image file") and reason.count("'") % 2 == 0, reason
