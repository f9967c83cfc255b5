"""Each score method against a direct computation with the flows on tiny inputs."""

from __future__ import annotations

import copy
import io
import math
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from helpers import randomize
from ood_flow.errors import InputError
from ood_flow.flows import create_flow
from ood_flow.dequantize import LOG_256, dequantize_indexed
from ood_flow.score import methods as methods_module
from ood_flow.score.combine import likelihood_ratio, waic
from ood_flow.score.complexity import COMPRESSORS, compressed_bits, complexity
from ood_flow.score.likelihood import sample_keys
from ood_flow.score.methods import METHODS, SCORES, ScoreContext, compute, get_method, total_passes

SEED = 3


def tiny_flow(seed: int, **options) -> nn.Module:
    torch.manual_seed(seed)
    return randomize(create_flow("realnvp", (1, 8, 8), channels=4, blocks=1, **options), seed=seed).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Ten 8x8 images, from flat to noisy, so the compressed lengths differ."""
    rng = np.random.default_rng(0)
    x = np.zeros((10, 1, 8, 8), np.uint8)
    for i in range(10):
        x[i] = np.where(rng.random((1, 8, 8)) < i / 10, rng.integers(0, 256, (1, 8, 8)), 17 * (i % 3))
    return torch.from_numpy(x)


@pytest.fixture(scope="module")
def flows() -> list[nn.Module]:
    return [tiny_flow(s) for s in range(3)]


def ids(n: int) -> np.ndarray:
    return np.arange(100, 100 + n).astype(str)


def direct_ll(flow, x: torch.Tensor) -> np.ndarray:
    """log P(x) of 8-bit images in nats, with the same per-sample noise as scoring, in one forward."""
    with torch.no_grad():
        u = dequantize_indexed(x, sample_keys(ids(len(x))), SEED)
        return (flow.log_prob(u) - x[0].numel() * LOG_256).double().numpy()


def context(flows, x, **kwargs) -> ScoreContext:
    return ScoreContext(list(flows), x, sample_keys(ids(len(x))), batch_size=4, seed=SEED, **kwargs)


def run(names, ctx) -> dict[str, np.ndarray]:
    return compute([get_method(n) for n in names], ctx)


# ---------------------------------------------------------------- complexity (Serrà et al. 2020)


def png_bits(image: np.ndarray) -> int:
    buffer = io.BytesIO()
    Image.fromarray(image[0]).save(buffer, format="PNG", compress_level=9)
    return 8 * len(buffer.getvalue())


def test_complexity_is_log2_likelihood_plus_png_bits(flows, images):
    out = run(["complexity"], context(flows[:1], images))
    bits = np.array([png_bits(im) for im in images.numpy()], dtype=np.float64)
    np.testing.assert_array_equal(out["compressed_bits"], bits)
    np.testing.assert_allclose(out["log_likelihood"], direct_ll(flows[0], images), rtol=1e-5)
    np.testing.assert_allclose(out["complexity"], direct_ll(flows[0], images) / math.log(2) + bits, rtol=1e-5)
    assert bits[0] < bits[-1]  # the flat image compresses better than the noisy one


def test_complexity_with_another_compressor(flows, images):
    out = run(["complexity"], context(flows[:1], images, options={"compressor": "zlib"}))
    bits = [8 * len(zlib.compress(im.tobytes(), 9)) for im in images.numpy()]
    np.testing.assert_array_equal(out["compressed_bits"], bits)
    np.testing.assert_allclose(out["complexity"], out["log_likelihood"] / math.log(2) + out["compressed_bits"])


def test_every_compressor_is_lossless_and_counts_bits(images):
    import bz2
    import lzma

    for name, decompress in {"zlib": zlib.decompress, "lzma": lzma.decompress, "bz2": bz2.decompress}.items():
        image = images.numpy()[5]
        assert decompress(COMPRESSORS[name](image)) == image.tobytes()
        assert compressed_bits(images[5:6], name)[0] == 8 * len(COMPRESSORS[name](image))
    assert complexity([-math.log(2) * 10], [3.0]).tolist() == [pytest.approx(-7.0)]
    rgb = torch.arange(48, dtype=torch.uint8).view(1, 3, 4, 4)
    buffer = io.BytesIO()
    Image.fromarray(rgb[0].permute(1, 2, 0).numpy()).save(buffer, format="PNG", compress_level=9)
    assert compressed_bits(rgb)[0] == 8 * len(buffer.getvalue())


def test_complexity_refuses_vectors_and_unknown_compressors(images):
    with pytest.raises(InputError, match="8-bit images"):
        run(["complexity"], context([create_flow("tabular", (4,))], torch.zeros(3, 4)))
    with pytest.raises(ValueError, match="valid compressors: png, zlib, lzma, bz2"):
        compressed_bits(images, "gzip")
    with pytest.raises(InputError, match="PNG compresses 1- or 3-channel"):
        compressed_bits(torch.zeros(1, 2, 4, 4, dtype=torch.uint8))


# ---------------------------------------------------------------- likelihood ratio (Ren et al. 2019)


def test_likelihood_ratio_is_the_difference_of_direct_log_likelihoods(flows, images):
    out = run(["likelihood-ratio"], context(flows[:1], images, background=flows[1]))
    ll_a, ll_b = direct_ll(flows[0], images), direct_ll(flows[1], images)
    np.testing.assert_allclose(out["likelihood_ratio"], ll_a - ll_b, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out["background_log_likelihood"], ll_b, rtol=1e-5)
    assert likelihood_ratio([-10.0, -20.0], [-12.0, -15.0]).tolist() == [2.0, -5.0]


def test_likelihood_ratio_needs_a_background(flows, images):
    with pytest.raises(InputError, match="--background-model"):
        run(["likelihood-ratio"], context(flows[:1], images))


# ---------------------------------------------------------------- WAIC (Choi et al. 2018)


def test_waic_is_mean_minus_population_variance_of_the_members(flows, images):
    out = run(["waic"], context(flows, images))
    lls = [direct_ll(f, images) for f in flows]
    mean = (lls[0] + lls[1] + lls[2]) / 3
    var = ((lls[0] - mean) ** 2 + (lls[1] - mean) ** 2 + (lls[2] - mean) ** 2) / 3
    np.testing.assert_allclose(out["waic_mean"], mean, rtol=1e-5)
    np.testing.assert_allclose(out["waic_var"], var, rtol=1e-3)
    np.testing.assert_allclose(out["waic"], mean - var, rtol=1e-4)
    assert (out["waic_var"] > 0).all()


def test_waic_by_hand_and_needs_two_members(flows, images):
    assert waic([[0.0, -4.0], [-2.0, -4.0]])["waic"].tolist() == [-2.0, -4.0]
    with pytest.raises(InputError, match="at least twice"):
        run(["waic"], context(flows[:1], images))
    with pytest.raises(ValueError, match="at least 2"):
        waic([[1.0, 2.0]])


# ---------------------------------------------------------------- batch norm in train mode (Song et al. 2019)


def test_bn_train_equals_log_prob_with_batch_statistics(flows, images):
    flow = flows[0]
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    out = run(["bn-train"], context([flow], images))
    manual = copy.deepcopy(flow)
    for m in manual.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
    expected = np.concatenate([direct_ll_batch(manual, images, start) for start in range(0, len(images), 4)])
    np.testing.assert_allclose(out["bn_train"], expected, rtol=1e-5)
    assert not np.allclose(out["bn_train"], direct_ll(flow, images), rtol=1e-3)
    assert all(torch.equal(before[k], v) for k, v in flow.state_dict().items())  # stored statistics untouched
    assert not flow.training and not any(m.training for m in flow.modules())


def direct_ll_batch(flow, x, start):
    with torch.no_grad():
        xb = x[start : start + 4]
        u = dequantize_indexed(xb, sample_keys(ids(len(x))[start : start + 4]), SEED)
        return (flow.log_prob(u) - xb[0].numel() * LOG_256).double().numpy()


def test_bn_train_depends_on_batch_composition(flows, images):
    alone = run(["bn-train"], context(flows[:1], images))["bn_train"]
    shuffled = torch.cat([images[:2], images[6:8], images[2:6], images[8:]])
    keys_order = np.r_[0, 1, 6, 7, 2, 3, 4, 5, 8, 9]
    ctx = ScoreContext(flows[:1], shuffled, sample_keys(ids(10)[keys_order]), batch_size=4, seed=SEED)
    other = run(["bn-train"], ctx)["bn_train"]
    assert not np.isclose(other[0], alone[0], rtol=1e-6)  # image 0 now shares its batch with images 6, 7
    np.testing.assert_allclose(other[8:], alone[8:], rtol=1e-6)  # the last batch is the same in both orders


def test_bn_train_without_batch_norm_warns_and_equals_the_likelihood(images):
    flow = tiny_flow(0, batchnorm=False)
    ctx = context([flow], images)
    out = run(["likelihood", "bn-train"], ctx)
    np.testing.assert_allclose(out["bn_train"], out["log_likelihood"], rtol=1e-6)
    assert any("no batch-norm" in note for note in ctx.notes)


# ---------------------------------------------------------------- the registry and shared passes


def test_registry_lists_oriented_scores_and_fails_loudly():
    assert SCORES == ("log_likelihood", "complexity", "likelihood_ratio", "bn_train", "waic")
    assert all(m.help and m.score for m in METHODS.values())
    assert "batch composition" in METHODS["bn-train"].help
    with pytest.raises(ValueError, match="valid methods: likelihood, complexity, likelihood-ratio, bn-train, waic"):
        get_method("ratio")


def test_methods_share_forward_passes(flows, images, monkeypatch):
    calls = []
    real = methods_module.score_likelihood

    def counting(flow, *args, **kwargs):
        calls.append(flow)
        return real(flow, *args, **kwargs)

    monkeypatch.setattr(methods_module, "score_likelihood", counting)
    chosen = [get_method(n) for n in METHODS]
    seen = []
    ctx = context(flows, images, background=flows[2], progress=seen.append)
    out = compute(chosen, ctx)
    assert len(calls) == total_passes(chosen, 3) == 5  # 3 members, background, bn-train
    assert sum(seen) == 5 * len(images)  # the progress bar's total
    assert total_passes([get_method("likelihood"), get_method("complexity")], 1) == 1
    assert set(SCORES) <= set(out)


def test_checks_run_before_any_work(flows, images, monkeypatch):
    monkeypatch.setattr(methods_module, "score_likelihood", lambda *a, **k: pytest.fail("computed before the check"))
    with pytest.raises(InputError, match="waic"):
        run(["likelihood", "waic"], context(flows[:1], images))
