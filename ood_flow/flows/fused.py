"""Fused inference for the st-networks: the same function in fewer passes over memory.

When nothing needs gradients and every layer is in eval mode (scoring), a convolution followed by
batch norm is one convolution with folded weights, a following ReLU runs inside oneDNN's
convolution (a post-op) instead of as a separate pass, and so does the sum a residual block or a skip
path adds the convolution's output to (a binary post-op); the ReLU after a batch norm runs in place.
:meth:`FusedPath.run_resnet` does this for the authors' ResNet (:class:`ood_flow.flows.resnet.ResNetST`),
:meth:`FusedPath.run` for the sequential networks, :meth:`FusedPath.run_mlp` for the fully connected ones
of vector flows (float32: ReLUs in place, bit-identical to the plain modules; bf16: oneDNN's linear kernel
with the ReLU inside, weights cast once, biases in float32). A vector flow's body, a chain of couplings on
halves, runs as one (:meth:`FusedPath.run_couplings`): the halves stay apart from the first coupling to the
last instead of being sliced and concatenated at each, and each coupling's scale factor is kept; in float32
the same operations on the same numbers, so the same bits, with fewer passes over memory and fewer Python
calls per batch (measured in ``benchmarks/speed/vector_speed.py``, docs/speed.md); under bf16 the scale
bound's ``tanh`` is taken through the sigmoid, within about 1e-7 of it and several times cheaper. The chains
of an image flow (Glow's steps, RealNVP's couplings) run through :meth:`FusedPath.run_steps`: what a step makes
from its parameters alone (an ActNorm's scale, an invertible 1x1 convolution's weight, a coupling's scale
factor) is kept between batches, and the couplings' arithmetic is done in place: the same bits.

A flow takes this path only once it is prepared for a runtime (:meth:`ood_flow.runtime.Runtime.prepare`),
which gives the flow one :class:`FusedPath`, shared by its st-networks, that owns everything the
path keeps: the kernel, the folded (and weight-normalised) kernels of each convolution, the counters. The
folded kernels are prepared when first needed and rebuilt whenever a weight or statistic they come from
changes (in place, as an optimiser step or ``load_state_dict`` does, or replaced; a change made through
``.data`` is invisible here, as it is to autograd). A flow that was never prepared runs its plain modules.

The result is the same function: conv+ReLU and conv+sum fusion are bit-identical in float32, batch-norm
folding moves results by float rounding only (relative 1e-6 in log-likelihoods). It is used for float32 on CPU
with oneDNN (bf16 under autocast). Nothing falls back silently: :meth:`FusedPath.stats` counts the
convolutions that ran through the fused kernel and the calls that took the plain modules, and says why
(gradients on, another dtype or device, a layer in training mode, the path disabled, the kernel missing
or failed); a kernel failure also warns. :meth:`FusedPath.disabled` turns the path off, e.g. to compare
against the plain modules.

Example:
    >>> import torch
    >>> from ood_flow.flows import create_flow
    >>> from ood_flow.runtime import Runtime
    >>> flow = Runtime().prepare(create_flow("realnvp", (1, 8, 8), channels=8, blocks=1, scales=1, couplings=2))
    >>> path = path_of(flow.eval())
    >>> with torch.no_grad():
    ...     _ = flow.log_prob(torch.rand(2, 1, 8, 8))
    >>> path.stats()["fused_calls"]
    2
"""

from __future__ import annotations

import collections
import contextlib
import warnings
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ood_flow.flows.base import Sequential, sum_except_batch
from ood_flow.flows.coupling import AffineCoupling, affine
from ood_flow.flows.layers import ActNorm, InvConv1x1
from ood_flow.flows.masks import ChannelMask
from ood_flow.flows.nets import MLP
from ood_flow.flows.precision import NARROW, current, narrow_mode, run_st
from ood_flow.flows.weightnorm import WNConv2d, WNScale, normalised


def path_of(flow: nn.Module) -> FusedPath | None:
    """The :class:`FusedPath` attached to ``flow``, or None (never prepared, or no convolutional st-network)."""
    return next((m.fused for m in flow.modules() if getattr(m, "fused", None) is not None), None)


def vector_chain(module: nn.Module) -> bool:
    """Whether ``module`` is a chain :meth:`FusedPath.run_couplings` runs: a :class:`~ood_flow.flows.base.Sequential`
    of affine couplings on vectors of one width, each with a channel mask (halves) and a fully connected
    st-network (a tabular flow's body, the detector's flow)."""
    layers = list(module.layers) if isinstance(module, Sequential) else []
    return bool(layers) and all(
        isinstance(c, AffineCoupling) and isinstance(c.mask, ChannelMask) and isinstance(c.net, MLP)
        and len(c.shape) == 1 and c.shape == layers[0].shape for c in layers)


def step_chain(module: nn.Module) -> bool:
    """Whether ``module`` is a chain :meth:`FusedPath.run_steps` runs: a :class:`~ood_flow.flows.base.Sequential`
    that is not a :func:`vector_chain` and holds an ActNorm, an invertible 1x1 convolution or an affine coupling
    (the steps and scales of Glow and RealNVP)."""
    return (isinstance(module, Sequential) and not vector_chain(module)
            and any(isinstance(m, (ActNorm, InvConv1x1, AffineCoupling)) for m in module.layers))


def find_kernel():
    """oneDNN's convolution with a fused element-wise post-op, where this torch build has it (else None)."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
    return op if op is not None and torch.backends.mkldnn.is_available() else None


class FusedPath:
    """The fused inference path of one prepared flow (see the module docstring).

    Attributes:
        enabled: False runs the plain modules (counted as ``plain:disabled``).
        kernel: oneDNN's fused convolution (:func:`find_kernel`); None when missing or after it failed.
        failure: the error that made this path stop using the kernel, if any.
        layout: the memory format of the folded kernels (the st-networks').
    """

    def __init__(self, *, enabled: bool = True, layout: torch.memory_format = torch.channels_last):
        self.enabled, self.layout, self.kernel, self.failure = enabled, layout, find_kernel(), None
        self.counts: collections.Counter = collections.Counter()
        self._folded: dict[int, tuple] = {}  # id(conv or scale) -> (key, sources, (weight, bias) or factor): _kept
        self._packs: dict[int, tuple] = {}  # id(conv) -> (weight, its version, that weight in oneDNN's layout)

    def __deepcopy__(self, memo) -> FusedPath:
        """A copied flow gets a path of its own, with nothing prepared or counted yet."""
        return FusedPath(enabled=self.enabled, layout=self.layout)

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the plain modules inside this block (the reference path)."""
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous

    def stats(self) -> dict:
        """What the path did since :meth:`reset_stats`.

        Keys: ``fused_calls`` (st-network calls that took the fused path), ``fused_chains`` (chains of vector
        couplings run by :meth:`run_couplings`), ``fused_step_chains`` (chains of image flow steps run by
        :meth:`run_steps`), ``fused_kernel_convs``
        (convolutions run by oneDNN's fused conv+ReLU kernel), ``fused_sum_convs`` (convolutions whose output
        oneDNN added to a residual or skip sum inside the kernel), ``split_narrow_convs`` (narrow convolutions
        run as split bf16 kernels, :meth:`_split`; ``paired_narrow_convs`` of them two output columns per pass,
        :func:`_pairs_outputs`), ``fused_kernel_linears`` (bf16 linear layers run by oneDNN's
        kernel, :meth:`run_mlp`), ``unpacked_kernels`` (kernels this build could not reorder
        once, :meth:`_packed`), ``plain_calls`` and, per reason, ``plain:<reason>``; ``kernel_failure``: the
        error that disabled the kernel, if any.
        """
        return {**self.counts, "kernel_failure": self.failure}

    def reset_stats(self) -> None:
        self.counts.clear()

    def usable(self, net: nn.Module, x: Tensor) -> bool:
        """Whether ``net(x)`` may take the fused path: inference only, float32 CPU (bf16 under autocast), every
        layer in eval mode.

        Every call is counted in :meth:`stats`, with the reason when the answer is no; under ``torch.compile``
        the answer is no, uncounted (the compiler fuses the plain modules itself, and counting in Python would
        break its graph and make it recompile).
        """
        if torch.compiler.is_compiling():
            return False
        reason = self._why_not(net, x)
        self.counts["fused_calls" if reason is None else "plain_calls"] += 1
        if reason is not None:
            self.counts[f"plain:{reason}"] += 1
        return reason is None

    def _why_not(self, net: nn.Module, x: Tensor) -> str | None:
        if not self.enabled:
            return "disabled"
        if torch.is_grad_enabled():
            return "grad"
        if x.dtype != torch.float32 or x.device.type != "cpu":
            return "dtype-or-device"
        if self.kernel is None:
            return "no-kernel"
        if _training(net):
            return "training-mode"
        return None

    def run(self, layers: nn.Sequential, x: Tensor) -> Tensor:
        """``layers(x)`` with conv+BN folded and ReLUs fused or in place; ``x`` itself is never modified."""
        mods = [m for m in layers if not isinstance(m, nn.Identity)]
        owned, i = False, 0  # owned: x is a tensor made here, so it may be overwritten in place
        while i < len(mods):
            m = mods[i]
            if isinstance(m, nn.Conv2d):
                bn = mods[i + 1] if i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d) else None
                j = i + 1 + (bn is not None)
                relu = j < len(mods) and isinstance(mods[j], nn.ReLU)
                x, i = self._conv(m, bn, x, relu), j + relu
            elif isinstance(m, nn.BatchNorm2d):
                x, i = _bn(m, x), i + 1
            elif isinstance(m, nn.ReLU):
                x, i = (torch.relu_(x) if owned else torch.relu(x)), i + 1
            elif hasattr(m, "body") and getattr(m, "residual", False):
                x, i = x + self.run(m.body, x), i + 1
            else:
                x, i, owned = m(x), i + 1, False
                continue
            owned = True
        return x

    def chain_usable(self, chain: Sequential, x: Tensor) -> bool:
        """Whether ``chain(x)`` may take :meth:`run_chain` (:func:`vector_chain`, :func:`step_chain`), on the terms
        of :meth:`usable`. Not counted here: :meth:`run_couplings` counts each st-network it runs, and when the
        answer is no, each coupling's st-network counts its own call."""
        return not torch.compiler.is_compiling() and self._why_not(chain, x) is None

    def run_chain(self, chain: Sequential, x: Tensor) -> tuple[Tensor, Tensor]:
        """``chain(x)`` for a chain :meth:`chain_usable` admits: :meth:`run_couplings` or :meth:`run_steps`."""
        return self.run_steps(chain, x) if step_chain(chain) else self.run_couplings(chain, x)

    def run_steps(self, chain: Sequential, x: Tensor) -> tuple[Tensor, Tensor]:
        """``chain(x)`` for a :func:`step_chain`, layer by layer as :class:`~ood_flow.flows.base.Sequential` runs
        it, but with what each step makes from its parameters alone kept between batches until a parameter changes
        (an ActNorm's ``exp(log_scale)`` and ``log_scale.sum()``, an invertible 1x1 convolution's ``P L U`` weight,
        a coupling's scale factor), and an ActNorm's and a coupling's arithmetic done in place where no one else
        holds the tensor (:meth:`~ood_flow.flows.coupling.AffineCoupling.scored`): the same operations on the same
        numbers, so the same bits, in fewer operations per batch. Other layers (squeeze, factor-out, whose inner
        chain takes this path again) run as they are."""
        logdet = x.new_zeros(x.shape[0])
        for layer in chain.layers:
            if isinstance(layer, ActNorm):
                x, ld = layer.apply(x, *self._kept(layer, (layer.log_scale,), (), lambda m=layer: (
                    torch.exp(m.log_scale), m.log_scale.sum())), inplace=True)
            elif isinstance(layer, InvConv1x1):
                x, ld = layer.apply(x, self._kept(layer, (layer.lu, layer.perm, layer.sign_s), (), layer.weight))
            elif isinstance(layer, AffineCoupling):
                x, ld = layer.scored(x, self._factor(layer.rescale))
            else:
                x, ld = layer(x)
            logdet = logdet + ld
        self.counts["fused_step_chains"] += 1
        return x, logdet

    def run_couplings(self, chain: Sequential, x: Tensor) -> tuple[Tensor, Tensor]:
        """``chain(x)`` for a :func:`vector_chain`: each coupling's operations on the same numbers as its own
        ``forward`` (bit-identical in float32), but the two halves of the vectors kept apart from the first
        coupling to the last and put together once (each coupling's ``forward`` slices its input and concatenates
        its output), each st-network run by :meth:`run_mlp` in the precision in force, its checks made once for
        the chain, and ``s`` and ``exp(s)`` computed in place (no graph here). Under bf16, ``tanh`` of the scale
        bound is taken through the sigmoid (:meth:`~ood_flow.flows.coupling.AffineCoupling.scale_shift`'s
        ``via_sigmoid``): within about 1e-7 of it, and the largest elementwise cost of these flows otherwise."""
        first = chain.layers[0].mask
        parts = {first.cond_range: first.conditioner(x), first.change_range: first.changed(x)}
        logdet, bf16 = x.new_zeros(x.shape[0]), current() == "bf16"
        for coupling in chain.layers:
            mask, layers = coupling.mask, coupling.net.net
            out = run_st(lambda v: self.run_mlp(layers, v), parts[mask.cond_range])
            s, t = coupling.scale_shift(out, self._factor(coupling.rescale), inplace=True, via_sigmoid=bf16)
            logdet = logdet + sum_except_batch(s)  # before affine turns s into exp(s)
            parts[mask.change_range] = affine(parts[mask.change_range], s, t, consume=True)
        self.counts["fused_calls"] += len(chain.layers)
        self.counts["fused_chains"] += 1
        return torch.cat([parts[r] for r in sorted(parts)], dim=1), logdet

    def run_mlp(self, layers: nn.Sequential, x: Tensor) -> Tensor:
        """``layers(x)`` of a fully connected st-network (:class:`~ood_flow.flows.nets.MLP`). float32: the plain
        modules' operations on the same numbers, ReLUs in place (bit-identical). Under bf16 autocast each linear
        layer runs through oneDNN's kernel with its weights cast once and kept, its float32 bias and a following
        ReLU inside the kernel (the plain module rounds the bias to bf16, casts the weights anew on every call
        and runs the ReLU as a pass of its own). The weights are not reordered into oneDNN's layout as the
        convolutions' are: for these small layers, reordering cost more than it saved."""
        mods, i = list(layers), 0
        while i < len(mods):
            m = mods[i]
            if isinstance(m, nn.Linear):
                relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
                x, i = self._linear(m, x, relu), i + 1 + relu
            elif isinstance(m, nn.ReLU):
                x, i = torch.relu_(x), i + 1  # after a batch norm: a tensor made here
            else:
                x, i = m(x), i + 1
        return x

    def _linear(self, m: nn.Linear, x: Tensor, relu: bool) -> Tensor:
        if not torch.is_autocast_enabled("cpu"):  # the layer's own tensors, the ReLU in place
            y = F.linear(x, m.weight, m.bias)
            return torch.relu_(y) if relu else y
        dtype = torch.get_autocast_dtype("cpu")
        weight, bias = self._weights(m, None, dtype)
        kernel = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if self.kernel is not None else None
        if dtype == torch.bfloat16 and kernel is not None:
            try:
                y = kernel(x.to(dtype), weight, bias, "relu" if relu else "none", [], "")
                self.counts["fused_kernel_linears"] += 1
                return y
            except RuntimeError as exc:  # as in _conv_in: plain ops from now on, said aloud
                self._kernel_failed(exc)
        y = F.linear(x, weight, _like(bias, weight))
        return torch.relu_(y) if relu else y

    def run_resnet(self, net: nn.Module, x: Tensor) -> Tensor:
        """:class:`~ood_flow.flows.resnet.ResNetST` on ``x``: each block's first conv, its batch norm and
        ReLU as one fused convolution; weight-normalised kernels computed once and kept."""
        h = _bn(net.in_norm, x)
        h = 2 * h if net.double_input else h
        h = self._conv(net.in_conv, None, torch.relu_(torch.cat([h, -h], dim=1)), relu=False)
        total = self._conv(net.skips[0], None, h, relu=False) if net.skips is not None else None
        for i, block in enumerate(net.blocks):
            h = net.bottleneck(h) if net.bottleneck is not None and i == net.where else h
            u = torch.relu_(_bn(block.in_norm, h, copy=True))
            u = self._conv(block.in_conv, _batchnorm(block.out_norm), u, relu=True)
            h = self._conv_add(block.out_conv, u, h, into=False)
            if total is not None:
                total = self._conv_add(net.skips[i + 1], h, total, into=True)
        h = net.bottleneck(h) if net.bottleneck is not None and len(net.blocks) == net.where else h
        h = torch.relu_(_bn(net.out_norm, h if total is None else total, copy=True))
        return self._conv(net.out_conv, None, h, relu=False)

    def _conv(self, conv: nn.Module, bn: nn.BatchNorm2d | None, x: Tensor, relu: bool) -> Tensor:
        device = x.device.type
        if not (conv.narrow and torch.is_autocast_enabled(device)):
            return self._conv_in(conv, bn, x.to(_dtype(conv, x)), relu)
        mode = narrow_mode()
        if mode == "bf16":  # the reference that breaks the bound (precision.NARROW_MODES): as autocast runs it
            return self._conv_in(conv, bn, x.to(torch.get_autocast_dtype(device)), relu)
        if mode == "split":
            y = self._split(conv, bn, x, relu)
            if y is not None:
                return y
        y = self._conv_in(conv, bn, x.float(), relu)  # a narrow one in float32, as the plain modules run it
        return y.to(torch.get_autocast_dtype(device)) if conv.widens else y

    def _split(self, conv: nn.Module, bn: nn.BatchNorm2d | None, x: Tensor, relu: bool) -> Tensor | None:
        """A narrow convolution under bf16 as oneDNN bf16 kernels on split operands (the ``split`` mode of
        :mod:`ood_flow.flows.precision`), or None where this does not apply (both sides narrow, an input not in
        bf16 where the output is narrow, no kernel, another kind of convolution).

        A float32 kernel ``w`` is split into ``hi = bf16(w)`` and ``lo = bf16(w - hi)``. Widening (few input
        channels): the input is rounded to bf16, as every bf16 layer's input is, and ``x*hi + x*lo`` is one
        convolution over twice the input channels, accumulated in float32 and handed on in bf16, as :meth:`_conv`'s
        float32 path hands it on. The kernel is what needs the split here too (a trained first layer takes
        differences of neighbouring pixels, whose terms nearly cancel); splitting the input as well (``hi*hi +
        lo*hi + hi*lo``, three times the input channels, as before) kept trained models no closer to their float32
        scores and cost half as much again (docs/speed.md, "The widening convolution's input"). Narrowing (the
        last, predicting s and t from a bf16 input, which is exact): the kernel's two parts are stacked as twice
        the output channels of one convolution, whose two halves add up in float32: the kernel is float32's to
        about 2^-16, and the output is rounded to bf16 (half a step of it, 2^-9 relative), as every bf16 layer's
        output is. A trained last layer sums terms that nearly cancel, so a bf16-rounded kernel moves its result by
        many bf16 steps of it (``tests/test_fused.py``). Recovering the output's rounding as well took a second
        pass of the convolution (docs/speed.md, "Precision": what that bought on trained models). A narrowing one
        with at most 4 output channels computes two output columns per pass (:func:`_pairs_outputs`): the same
        products and sums."""
        widening = conv.widens
        narrowing = not conv.widens and x.dtype == torch.bfloat16 and not _narrow_in(conv)
        if not (widening or narrowing) or self.kernel is None or not _kernel_takes(conv):
            return None
        padding, stride, dilation, groups = geometry = _geometry(conv)
        if groups != 1:
            return None
        paired = narrowing and _pairs_outputs(conv, geometry, x.shape[-1])
        weight, bias = self._weights(conv, bn, torch.bfloat16, "pair" if paired else "in" if widening else "out")
        if paired:  # a column more of kernel, two columns a step; an odd width: a column more of padding each side
            padding, stride = [padding[0], padding[1] + x.shape[-1] % 2], [1, 2]
            geometry = padding, stride, dilation, groups
        weight = self._packed(conv, weight, geometry, x.shape)
        try:
            if widening:
                hi = x.to(torch.bfloat16)
                x2 = torch.cat([hi, hi], dim=1).contiguous(memory_format=self.layout)  # for the kernel's hi and lo
                y = self.kernel(x2, weight, bias, padding, stride, dilation, groups, "relu" if relu else "none", [], "")
            else:
                both = self.kernel(x, weight, None, padding, stride, dilation, groups, "none", [], "")
                y = _halves_summed(both, paired, x.shape[-1])
                y = y.add_(bias.view(1, -1, 1, 1)) if bias is not None else y
                y = torch.relu_(y) if relu else y
        except RuntimeError as exc:  # as in _conv_in: plain ops from now on, said aloud
            self._kernel_failed(exc)
            return None
        self.counts["split_narrow_convs"] += 1
        self.counts["paired_narrow_convs"] += paired
        return y

    def _conv_in(self, conv: nn.Module, bn: nn.BatchNorm2d | None, x: Tensor, relu: bool) -> Tensor:
        """:meth:`_conv` with ``x`` in the dtype the convolution runs in."""
        weight, bias = self._weights(conv, bn, x.dtype)
        padding, stride, dilation, groups = geometry = _geometry(conv)
        # bf16 goes through oneDNN's kernel with or without the ReLU: it takes the float32 bias (a batch norm's
        # shift folded in), which rounded to bf16 would move every output of a channel the same way
        if (relu or x.dtype == torch.bfloat16) and _kernel_takes(conv) and self.kernel is not None:
            try:
                packed = self._packed(conv, weight, geometry, x.shape)
                y = self.kernel(x, packed, bias, padding, stride, dilation, groups, "relu" if relu else "none", [], "")
                self.counts["fused_kernel_convs"] += 1
                return y
            except RuntimeError as exc:  # a build whose kernel rejects this case: plain ops from now on, said aloud
                self._kernel_failed(exc)
        with torch.autocast(x.device.type, enabled=False):  # x is in the dtype _dtype chose, narrow ones fp32
            y = F.conv2d(x, weight, _like(bias, x), stride, padding, dilation, groups)
        return torch.relu_(y) if relu else y

    def _conv_add(self, conv: nn.Module, x: Tensor, other: Tensor, into: bool) -> Tensor:
        """``other + conv(x)``, the sum inside oneDNN's convolution (a binary post-op: one pass over ``other``
        fewer, bit-identical in float32) where ``other`` has the convolution's dtype and layout; ``into``: the
        sum is written into ``other`` (a tensor made here), else ``other`` is left as it was."""
        x = x.to(_dtype(conv, x))
        weight, bias = self._weights(conv, None, x.dtype)
        binary = getattr(getattr(torch.ops.mkldnn, "_convolution_pointwise_" if into else "_convolution_pointwise",
                                 None), "binary", None) if self.kernel is not None else None
        if (binary is not None and isinstance(conv, WNConv2d) and other.dtype == x.dtype
                and x.is_contiguous(memory_format=self.layout) and other.is_contiguous(memory_format=self.layout)):
            try:
                geometry = _geometry(conv)
                packed = self._packed(conv, weight, geometry, x.shape)
                y = binary(*((other, x) if into else (x, other)), packed, _like(bias, x), *geometry,
                           "add", None, None, [], None)
                self.counts["fused_sum_convs"] += 1
                return other if into else y
            except RuntimeError as exc:  # as in _conv: plain ops from now on, said aloud
                self._kernel_failed(exc)
        y = self._conv(conv, None, x, relu=False)
        return other.add_(y) if into else other + y

    def _factor(self, scale: WNScale) -> Tensor:
        """``scale.factor()``, made once and kept until its ``weight_g`` or ``weight_v`` changes (as :meth:`_weights`
        keeps kernels): three operations fewer per coupling on every batch."""
        return self._kept(scale, (scale.weight_g, scale.weight_v), (), scale.factor)

    def _kernel_failed(self, exc: RuntimeError) -> None:
        """Stop using oneDNN's fused kernels for the rest of this path's life, and say so once."""
        self.kernel, self.failure = None, str(exc).splitlines()[0][:200]
        warnings.warn(f"oodflow: oneDNN's fused kernel failed ({self.failure}); "
                      "scoring continues with plain layers", RuntimeWarning, stacklevel=3)

    def _packed(self, conv: nn.Module, weight: Tensor, geometry: tuple, shape: torch.Size) -> Tensor:
        """``weight`` (as :meth:`_weights` gave it) reordered once into oneDNN's own layout for its kernels, which
        otherwise reorder it on every call; the same numbers, so the same results bit for bit. Kept beside the
        weight it came from and rebuilt with it; where this build cannot reorder, ``weight`` itself (counted in
        :meth:`stats` as ``unpacked_kernels``). ``geometry``: :func:`_geometry`'s; ``shape``: the input's, its
        channels taken from the kernel (a split kernel's input has twice the convolution's channels)."""
        version = None if weight.is_inference() else weight._version  # folded under inference_mode: never changed
        kept = self._packs.get(id(conv))
        if kept is None or kept[0] is not weight or kept[1] != version:  # a parameter changed in place
            groups = geometry[3]
            hint = [shape[0], weight.shape[1] * groups, *shape[2:]]
            try:
                packed = torch._C._nn.mkldnn_reorder_conv2d_weight(weight.contiguous().to_mkldnn(), *geometry, hint)
            except (RuntimeError, AttributeError):
                packed = weight
                self.counts["unpacked_kernels"] += 1
            kept = self._packs[id(conv)] = (weight, version, packed)
        return kept[2]

    def _weights(self, conv: nn.Module, bn: nn.BatchNorm2d | None, dtype: torch.dtype,
                 split: str | None = None) -> tuple[Tensor, Tensor | None]:
        """``conv`` then ``bn`` (eval) as one convolution in ``dtype``: prepared once, kept until a tensor it is
        made of changes (another tensor, other memory, or a new version: an in-place change). ``split``: the
        kernel split into bf16 parts for :meth:`_split` (``in``: hi, lo along the input channels; ``out``:
        hi, lo along the output channels)."""
        def make() -> tuple[Tensor, Tensor | None]:
            weight, bias = _fold(conv, bn, torch.float32 if split else dtype, self.layout)
            return (_split_kernel(weight, split, self.layout) if split else weight), bias

        return self._kept(conv, _sources(conv, bn), ((bn.eps,) if bn is not None else ()) + (dtype, split), make)

    def _kept(self, owner: nn.Module, sources: tuple[Tensor | None, ...], extra: tuple, make):
        """What ``make()`` prepares from ``sources`` for ``owner``: made once and kept until one of them changes
        (another tensor, other memory, or a new version: an in-place change) or ``extra`` does. The sources are
        kept with it, so that no other tensor can take their ids meanwhile."""
        key = tuple((id(t), t.data_ptr(), t._version) if t is not None else None for t in sources) + extra
        kept = self._folded.get(id(owner))
        if kept is None or kept[0] != key:
            with torch.no_grad():
                kept = self._folded[id(owner)] = (key, sources, make())
        return kept[2]


def _sources(conv: nn.Module, bn: nn.BatchNorm2d | None) -> tuple[Tensor | None, ...]:
    """The tensors a folded kernel is made of."""
    weights = (conv.weight_g, conv.weight_v) if isinstance(conv, WNConv2d) else (conv.weight,)
    norm = (bn.weight, bn.bias, bn.running_mean, bn.running_var) if bn is not None else ()
    return (*weights, conv.bias, *norm)


def _fold(conv: nn.Module, bn: nn.BatchNorm2d | None, dtype: torch.dtype,
          layout: torch.memory_format) -> tuple[Tensor, Tensor | None]:
    """The kernel and bias of ``conv`` then ``bn`` (eval): weights scaled per output channel."""
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        weight = normalised(conv.weight_g, conv.weight_v) if isinstance(conv, WNConv2d) else conv.weight
        bias = conv.bias
        if bn is not None:
            scale = torch.rsqrt(bn.running_var + bn.eps)
            scale = scale * bn.weight if bn.weight is not None else scale
            weight = weight * scale.view(-1, *[1] * (weight.dim() - 1))
            bias = -bn.running_mean if bias is None else bias - bn.running_mean
            bias = bias * scale + (bn.bias if bn.bias is not None else 0.0)
        weight = weight.to(dtype)
        weight = weight.contiguous(memory_format=layout) if weight.dim() == 4 else weight
        return weight, (bias.float() if bias is not None else None)  # kept float32: see FusedPath._conv


def _split_kernel(weight: Tensor, split: str, layout: torch.memory_format) -> Tensor:
    """A float32 kernel as the bf16 parts :meth:`FusedPath._split` convolves with (``pair``: the ``out`` parts laid
    out for two neighbouring output columns at once, :func:`_pairs_outputs`)."""
    hi = weight.to(torch.bfloat16)
    lo = (weight - hi).to(torch.bfloat16)
    parts = torch.cat([hi, lo], dim=1 if split == "in" else 0)
    if split == "pair":  # [the left column's hi, lo; the right one's], over one more column: its window, shifted
        wide = parts.new_zeros((2, *parts.shape[:3], parts.shape[3] + 1))
        wide[0, ..., :-1], wide[1, ..., 1:] = parts, parts
        parts = wide.flatten(0, 1)
    return parts.contiguous(memory_format=layout)


LANES = 16
"""Output channels that oneDNN's bf16 convolution computes in one pass on AVX-512 (16 float32 sums per register):
a kernel with fewer output channels takes about as long as one with this many. Measured on Zen 4 (2 threads,
batches of 256 of 14 x 14, 128 input channels, 3 x 3): 5.1 ms for 4 output channels, 5.0 for 8, 5.0 for 16, 8.5 for
32 (``benchmarks/speed/narrow_pairs.py`` times it, docs/speed.md has its table); AMX's tiles are 16 sums wide too,
but no AMX CPU has timed it."""


def _pairs_outputs(conv: nn.Module, geometry: tuple, width: int) -> bool:
    """Whether a narrowing split convolution (:meth:`FusedPath._split`) computes two neighbouring output columns
    per pass: when its hi and lo parts leave half the :data:`LANES` idle, and it is a plain "same" convolution
    (odd square kernel, padding of half of it, stride and dilation 1) on at least two columns. The kernel then
    spans one more column and moves two at a time: a third more products, in half as many passes of a kernel
    that took as long for twice the output channels; the same products, summed in float32 as before."""
    padding, stride, dilation, _ = geometry
    cout, _, kh, kw = (conv.weight_v if isinstance(conv, WNConv2d) else conv.weight).shape
    return (4 * cout <= LANES and width >= 2 and kh == kw and kh % 2 == 1 and padding == [kh // 2] * 2
            and stride == [1, 1] and dilation == [1, 1])


def _halves_summed(both: Tensor, paired: bool, width: int) -> Tensor:
    """float(hi) + float(lo) of :meth:`FusedPath._split`'s narrowing kernel output ``both`` (per pixel, hi's
    channels then lo's), written once in the contiguous layout the st-network hands on. Paired
    (:func:`_pairs_outputs`), each of its columns holds two output columns, ``2j`` and ``2j + 1`` (for an odd
    ``width``, padded a column more on the left, ``2j - 1`` and ``2j``), one after the other in memory, so that it
    reads as an output of twice the width."""
    n, channels, h, w = both.shape
    c = channels // (4 if paired else 2)
    full = both.permute(0, 2, 3, 1).float().reshape(n, h, w * (2 if paired else 1), 2, c)[:, :, -width:]
    hi, lo = (full[..., i, :].permute(0, 3, 1, 2) for i in (0, 1))
    return torch.empty((n, c, h, width), dtype=torch.float32, device=both.device).copy_(hi).add_(lo)


def _geometry(conv: nn.Module) -> tuple[list[int], list[int], list[int], int]:
    """Padding, stride, dilation and groups of a convolution (weight-normalised or ``nn.Conv2d``), as
    ``F.conv2d`` and oneDNN's kernels take them."""
    if isinstance(conv, WNConv2d):
        return [conv.padding] * 2, [1, 1], [1, 1], 1
    return list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups


def _kernel_takes(conv: nn.Module) -> bool:
    """Whether oneDNN's kernels can run ``conv``: zero padding given as numbers (not ``"same"``, not reflected)."""
    return isinstance(conv, WNConv2d) or (isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros"
                                           and isinstance(conv.padding, tuple))


def _narrow_in(conv: nn.Module) -> bool:
    """Whether ``conv`` has fewer input channels than :data:`~ood_flow.flows.precision.NARROW`."""
    cin = conv.weight_v.shape[1] if isinstance(conv, WNConv2d) else conv.in_channels
    return cin < NARROW


def _like(bias: Tensor | None, x: Tensor) -> Tensor | None:
    """``bias`` in ``x``'s dtype, for the operations that take only that (``F.conv2d``, ``F.linear``, the sum
    kernel)."""
    return bias if bias is None or bias.dtype == x.dtype else bias.to(x.dtype)


def _dtype(conv: nn.Module, x: Tensor) -> torch.dtype:
    """The autocast dtype (the st-network's precision) for wide convolutions, float32 for narrow ones, as the
    plain modules run them (``conv.narrow``, :func:`ood_flow.flows.precision.is_narrow`; a narrow one that
    ``widens`` hands its output on in the autocast dtype, :meth:`FusedPath._conv`)."""
    if torch.is_autocast_enabled(x.device.type) and not conv.narrow:
        return torch.get_autocast_dtype(x.device.type)
    return torch.float32


def _training(m: nn.Module) -> bool:
    """Whether ``m`` or any module inside it is in training mode: ``any(x.training for x in m.modules())`` without
    the bookkeeping of ``modules()`` (names, a set of those seen), as it runs on every scoring call."""
    return m.training or any(_training(c) for c in m._modules.values() if c is not None)


def _batchnorm(m: nn.Module) -> nn.BatchNorm2d | None:
    return m if isinstance(m, nn.BatchNorm2d) else None


def _bn(m: nn.Module, x: Tensor, copy: bool = False) -> Tensor:
    """Eval-mode batch norm (a new tensor); ``nn.Identity`` gives ``x`` (a copy if ``copy``)."""
    if isinstance(m, nn.BatchNorm2d):
        return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
    return x.clone() if copy else x
