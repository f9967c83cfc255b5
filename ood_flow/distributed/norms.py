"""State that must agree across processes: batch norm over the global batch, ActNorm's first batch.

``--sync-bn`` normalises with the statistics of the whole global batch instead of each process's
share: on CUDA with :class:`torch.nn.SyncBatchNorm`, on the CPU (which SyncBatchNorm refuses) with
:class:`GlobalBatchNorm`, the same computation written with autograd-aware all-reduces. ActNorm's
data-dependent initialisation always uses the moments of the global first batch, so every process
starts from the same weights as one process would with the whole batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ood_flow.distributed.group import Dist
from ood_flow.flows.layers import ActNorm


def _channel_dims(x: Tensor) -> list[int]:
    return [0] + list(range(2, x.dim()))


def _view(v: Tensor, x: Tensor) -> Tensor:
    return v.view(1, -1, *([1] * (x.dim() - 2)))


class _AllReduce(torch.autograd.Function):
    """A sum over processes with gradients: the gradient of each share is the summed gradient of the total."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def all_reduce_sum(x: Tensor, group=None) -> Tensor:
    """``x`` summed over every process of ``group``, differentiable."""
    return _AllReduce.apply(x, group or dist.group.WORLD)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training-mode statistics are those of the global batch of every process.

    The mean and the (biased) variance are all-reduced sums with gradients (both passes), so the
    backward pass is that of batch norm over the concatenated batch; eval mode is plain batch norm.
    """

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm, group=None):
        super().__init__(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
        self.weight, self.bias = norm.weight, norm.bias  # the same parameters (an optimiser may hold them)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(self, name, getattr(norm, name))
        self.group = group
        self.train(norm.training)

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        dims = _channel_dims(x)
        count = torch.full((1,), x.numel() // x.shape[1], dtype=x.dtype, device=x.device)
        total = all_reduce_sum(torch.cat([x.sum(dims), count]), self.group)
        n = total[-1].detach()
        centered = x - _view(total[:-1] / n, x)
        var = all_reduce_sum(centered.pow(2).sum(dims), self.group) / n
        y = centered * _view(torch.rsqrt(var + self.eps), x)
        if self.affine:
            y = y * _view(self.weight, x) + _view(self.bias, x)
        if self.track_running_stats:
            self._track(total[:-1].detach() / n, var.detach(), n)
        return y

    @torch.no_grad()
    def _track(self, mean: Tensor, var: Tensor, n: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(var * n / (n - 1).clamp(min=1), alpha=factor)


def sync_batchnorm(flow: nn.Module, d: Dist) -> nn.Module:
    """Every batch norm of ``flow`` normalised over the global batch (in place; parameters and
    statistics are kept, and the state dict's names do not change)."""
    if d.backend == "nccl":
        return nn.SyncBatchNorm.convert_sync_batchnorm(flow, process_group=d.side)
    for parent in list(flow.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
                setattr(parent, name, GlobalBatchNorm(child, d.side))
    return flow


def global_actnorm_init(flow: nn.Module, d: Dist) -> list:
    """Make every ActNorm of ``flow`` initialise from the moments of the global first batch (all
    processes), so every process starts from identical weights. Returns the hook handles."""
    if not d.active:
        return []
    return [m.register_forward_pre_hook(_init_hook(d)) for m in flow.modules() if isinstance(m, ActNorm)]


def _init_hook(d: Dist):
    @torch.no_grad()
    def hook(module: ActNorm, args) -> None:
        if not module.training or module.is_initialized():
            return
        x = args[0]
        dims = _channel_dims(x)
        count = torch.full((1,), x.numel() // x.shape[1], dtype=torch.float64, device=x.device)
        total = d.sum(torch.cat([x.double().sum(dims), count]), group=d.side)
        if not ActNorm.can_initialize(int(total[-1])):  # the same total on every process: all return alike
            return
        mean = total[:-1] / total[-1]
        squares = d.sum((x.double() - _view(mean, x)).pow(2).sum(dims), group=d.side)
        std = (squares / (total[-1] - 1)).sqrt()
        module.initialize(_view(mean, x).to(x.dtype), _view(std, x).to(x.dtype))
        for p in (module.bias, module.log_scale):  # all-reduced alike everywhere; made bit-identical regardless
            dist.broadcast(p.data, 0, group=d.side)

    return hook
