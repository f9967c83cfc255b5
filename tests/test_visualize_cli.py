"""``oodflow visualize``: every command writes a PNG of the expected layout; bad input is one line, exit 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import ood_flow
import ood_flow.visualize as viz
import ood_flow.visualize.histogram as histogram_module
import ood_flow.visualize.run as run_module
from ood_flow import store
from ood_flow.dequantize import dequantized_draws
from ood_flow.cli.main import app
from ood_flow.visualize import panel_count
from ood_flow.visualize.histogram import dataset_stem, plot_range

runner = CliRunner()


def run(*args, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"exit {result.exit_code}\nstderr: {result.stderr}\n{result.exception!r}"
    return result


def one_line_error(result, *fragments: str) -> None:
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and result.stdout == "", result.stderr
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


@pytest.fixture
def figures(monkeypatch):
    """Every figure a command saves, in order (saving still happens)."""
    saved = []

    def capture(fig, path, dpi=100, **kwargs):
        saved.append(fig)
        original(fig, path, dpi, **kwargs)

    original = viz.save_figure
    monkeypatch.setattr(run_module, "save_figure", capture)
    monkeypatch.setattr(histogram_module, "save_figure", capture)
    return saved


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny models (RealNVP, Glow, cycle mask, tabular) and two 8x8 image sources."""
    d = tmp_path_factory.mktemp("viz")
    torch.manual_seed(0)
    models = {
        "realnvp": ood_flow.create_flow("realnvp", (1, 8, 8), channels=4, blocks=1, scales=2),
        "glow": ood_flow.create_flow("glow", (1, 8, 8), channels=4, couplings=2, scales=2),
        "cycle": ood_flow.create_flow("realnvp", (1, 8, 8), mask="cycle", channels=4, blocks=1, couplings=4),
        "tabular": ood_flow.create_flow("tabular", (6,), couplings=2, hidden=8),
    }
    for name, flow in models.items():
        flow.train()
        flow(torch.rand(8, *flow.input_shape))  # initialise Glow's ActNorm as training would
        ood_flow.save_model(flow.eval(), d / f"{name}.pt")
    rng = np.random.default_rng(0)
    np.savez(d / "ind.npz", x=rng.integers(0, 256, (5, 8, 8), dtype=np.uint8))
    np.savez(d / "ood.npz", x=(rng.random((4, 8, 8)) < 0.3).astype(np.uint8) * 255)
    return d


def test_latents_shows_inputs_and_latents_per_source(files, figures):
    out = files / "lat.png"
    result = run("visualize", "latents", files / "ind.npz", files / "ood.npz", "--model", files / "realnvp.pt",
                 "--out", out, "--count", "3")
    assert panel_count(figures[0]) == 2 * 2 * 3  # per source: a row of inputs and a row of latents
    assert len(figures[0].axes) == 2 * 2 * 3 + 1  # and one colour bar
    assert png_size(out)[0] > 300 and "wrote" in result.stderr and result.stdout == ""


def test_latents_average_bn_train_and_glow(files, figures):
    result = run("visualize", "latents", files / "ind.npz", "--model", files / "glow.pt", "--out", files / "g.png",
                 "--average", "3", "--bn-train", "--count", "5", "--quiet")
    assert panel_count(figures[0]) == 2 * 5 and result.stderr == "" and result.stdout == ""
    assert "3 dequantization draws" in figures[0].get_suptitle()
    png_size(files / "g.png")


def test_latents_are_those_of_the_model():
    flow = ood_flow.create_flow("realnvp", (1, 8, 8), channels=4, blocks=1).eval()
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    keys = torch.arange(4)
    lat = viz.image_latents(flow, x, keys, average=1, seed=3)
    z, _ = flow(dequantized_draws(x, keys, 3, 1))
    torch.testing.assert_close(lat.z, z)
    mean = viz.image_latents(flow, x, keys, average=2, seed=3).z
    z2, _ = flow(dequantized_draws(x, keys, 3, 2))
    torch.testing.assert_close(mean, z2.view(2, 4, 1, 8, 8).mean(0))


@pytest.mark.parametrize("model, sources, couplings", [("glow", 2, 4), ("cycle", 1, 4)])
def test_coupling_shows_four_maps_per_source_and_coupling(files, figures, model, sources, couplings):
    out = files / f"c-{model}.png"
    run("visualize", "coupling", *[files / "ind.npz", files / "ood.npz"][:sources], "--model",
        files / f"{model}.pt", "--out", out, "--index", "1", "--quiet")
    assert panel_count(figures[0]) == couplings * 4 * sources
    assert len(figures[0].axes) == couplings * (4 * sources + 3)  # three colour bars per row
    png_size(out)


def test_pick_layers_all_or_evenly_spaced():
    assert viz.pick_layers(10) == list(range(10))
    assert viz.pick_layers(32, limit=4) == [0, 10, 21, 31]
    assert viz.pick_layers(10, [0, -1, 9]) == [0, 9]


def test_coupling_layers_option_selects_rows(files, figures):
    result = run("visualize", "coupling", files / "ind.npz", "--model", files / "realnvp.pt", "--out",
                 files / "c.png", "--layers", "0,-1")
    assert panel_count(figures[0]) == 2 * 4 and "couplings 0, 9 of 10" in result.stderr


def test_samples_one_panel_per_temperature(files, figures):
    run("visualize", "samples", "--model", files / "realnvp.pt", "--out", files / "s.png", "--count", "9",
        "-t", "0.5", "-t", "1", "--quiet")
    assert panel_count(figures[0]) == 2
    run("visualize", "samples", "--model", files / "tabular.pt", "--out", files / "st.png", "--count", "5", "--quiet")
    assert panel_count(figures[1]) == 1 and len(figures[1].axes) == 2  # heat map of vectors and its colour bar
    png_size(files / "s.png"), png_size(files / "st.png")


def test_samples_are_reproducible_and_scale_with_temperature(files):
    flow = ood_flow.load_model(files / "realnvp.pt")
    a, b = viz.draw_samples(flow, 4, 1.0, seed=5), viz.draw_samples(flow, 4, 1.0, seed=5)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    cold = viz.draw_samples(flow, 4, 0.0, seed=5)  # temperature 0: z = 0 for every sample
    assert torch.allclose(cold, cold[:1].expand_as(cold))


@pytest.mark.parametrize("model", ["realnvp", "glow"])
def test_resample_shows_original_resampled_and_difference(files, figures, model):
    out = files / f"r-{model}.png"
    result = run("visualize", "resample", files / "ind.npz", files / "ood.npz", "--model", files / f"{model}.pt",
                 "--out", out, "--box", "4", "--count", "2")
    assert panel_count(figures[0]) == 3 * 2 * 2
    assert ("(16 latents)" in result.stderr) == (model == "realnvp")  # Glow's 1x1 convs widen the region
    png_size(out)


def test_resample_changes_only_the_box_latents():
    flow = ood_flow.create_flow("realnvp", (1, 8, 8), channels=4, blocks=1).eval()
    x = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    res = viz.resample_box(flow, x, torch.arange(2), box=2, seed=1)
    z0, _ = flow(res.original)
    z1, _ = flow(res.resampled.clamp(1e-4, 1 - 1e-4))
    outside = ~res.latent_mask.expand_as(z0)
    assert res.count == 4 and torch.allclose(z0[outside], z1[outside], atol=1e-3)
    assert not torch.allclose(z0[~outside], z1[~outside], atol=1e-3)


@pytest.fixture
def scores(tmp_path):
    path = tmp_path / "scores.h5"
    rng = np.random.default_rng(0)
    groups = (("fashionmnist-train", -2500, 50), ("fashionmnist-test", -2520, 40), ("mnist-test", -1800, 30))
    for name, mean, n in groups:
        ll = rng.normal(mean, 100, n)
        store.write_group(path, name, {"log_likelihood": ll, "bits_per_dim": -ll / 784 / np.log(2),
                                       "id": np.arange(n)}, {"source": name})
    return path


def test_histogram_range_cuts_only_far_outliers():
    values = np.random.default_rng(1).normal(0, 1, 2000)
    assert plot_range(values) == (values.min(), values.max())
    lo, hi = plot_range(np.append(values, -1e6))
    assert -6 < lo < -3 and hi == values.max()


def test_histogram_overlays_groups_with_roles_and_counts(scores, tmp_path, figures):
    out = tmp_path / "h.png"
    result = run("visualize", "histogram", scores, "--out", out)
    assert panel_count(figures[0]) == 1 and png_size(out)[0] > 300
    labels = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    assert labels == ["fashionmnist-train (in-distribution, n=50)", "fashionmnist-test (in-distribution, n=40)",
                      "mnist-test (OOD, n=30)"]
    assert "mnist-test (OOD, n=30)" in result.stderr


def test_histogram_groups_score_and_in_dist_options(scores, tmp_path, figures):
    run("visualize", "histogram", scores, "--out", tmp_path / "h.png", "--groups", "mnist-test,fashionmnist-test",
        "--in-dist", "fashionmnist-test", "--score", "bits_per_dim", "--quiet")
    ax = figures[0].axes[0]
    assert [t.get_text().split(" (")[0] for t in ax.get_legend().get_texts()] == ["mnist-test", "fashionmnist-test"]
    assert "bits per dimension" in ax.get_xlabel()


def test_dataset_stem_groups_splits_of_one_dataset():
    assert dataset_stem("fashionmnist-train") == dataset_stem("fashionmnist-test") == "fashionmnist"
    assert dataset_stem("demo-mnist-test") == "demo-mnist" and dataset_stem("folder") == "folder"


@pytest.mark.parametrize("command", ["latents", "coupling", "resample"])
def test_image_commands_refuse_a_tabular_model(files, command):
    out = files / f"bad-{command}.png"
    result = run("visualize", command, files / "ind.npz", "--model", files / "tabular.pt", "--out", out, code=1)
    one_line_error(result, "needs an image model", "tabular")
    assert not out.exists()


@pytest.mark.parametrize("args, fragments", [
    (["latents", "{d}/ind.npz", "--model", "{d}/missing.pt"], ["missing.pt", "no such model file"]),
    (["coupling", "{d}/ind.npz", "--model", "{d}/realnvp.pt", "--index", "7"], ["--index 7", "5 samples"]),
    (["coupling", "{d}/ind.npz", "--model", "{d}/realnvp.pt", "--layers", "12"], ["--layers 12", "10 couplings"]),
    (["coupling", "{d}/ind.npz", "--model", "{d}/realnvp.pt", "--layers", "a"], ["comma-separated integers"]),
    (["resample", "{d}/ind.npz", "--model", "{d}/realnvp.pt", "--box", "9"], ["--box", "8x8"]),
    (["latents", "{d}/nothing.npz", "--model", "{d}/realnvp.pt"], ["nothing"]),
])
def test_bad_input_is_one_line_and_writes_nothing(files, args, fragments):
    out = files / "never.png"
    result = run("visualize", *[a.format(d=files) for a in args], "--out", out, code=1)
    one_line_error(result, *fragments)
    assert not out.exists()


def test_histogram_unknown_group_or_file(scores, tmp_path):
    out = tmp_path / "h.png"
    one_line_error(run("visualize", "histogram", scores, "--out", out, "--groups", "svhn", code=1),
                   "no group 'svhn'", "mnist-test")
    one_line_error(run("visualize", "histogram", scores, "--out", out, "--in-dist", "svhn", code=1), "--in-dist")
    one_line_error(run("visualize", "histogram", tmp_path / "none.h5", "--out", out, code=1), "no such file")
    assert not out.exists()



def _beyond_canvas(fig) -> dict:
    """How far (inches) what ``fig`` draws reaches beyond its canvas on each side, where it does (matplotlib cuts
    that off in the PNG): the bounding box of every drawn artist, titles and tick labels included."""
    fig.canvas.draw()
    drawn, (width, height) = fig.get_tightbbox(fig.canvas.get_renderer()), fig.get_size_inches()
    beyond = {"left": -drawn.x0, "bottom": -drawn.y0, "right": drawn.x1 - width, "top": drawn.y1 - height}
    return {side: round(v, 3) for side, v in beyond.items() if v > 0.01}


@pytest.mark.parametrize("args", [
    ("samples", "--model", "tabular.pt", "--count", "2"),
    ("samples", "--model", "realnvp.pt", "--count", "1"),
    ("latents", "ind.npz", "--model", "realnvp.pt", "--count", "1"),
    ("coupling", "ind.npz", "--model", "realnvp.pt", "--layers", "0"),
    ("resample", "ind.npz", "--model", "realnvp.pt", "--count", "1", "--box", "4"),
], ids=lambda a: "-".join(a[:1] + a[2:3]))
def test_every_text_fits_the_figure_at_its_narrowest(files, figures, args):
    """A title is never cut off at the image's edges (the tabular samples figure cut its title at both ends)."""
    run("visualize", *[files / a if a.endswith((".pt", ".npz")) else a for a in args], "--out", files / "narrow.png",
        "--overwrite", "--quiet")
    assert _beyond_canvas(figures[0]) == {}
