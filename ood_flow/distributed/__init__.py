"""Several processes, one job: data-parallel training and sharded scoring under ``torchrun``.

:func:`session` starts the process group from torchrun's variables (gloo on the CPU, NCCL on
CUDA) and returns a :class:`Dist`; outside torchrun it is one process and every helper is the
identity, so ``train_flow``, ``score_source`` and ``embed_source`` run the same code either way.
See docs/distributed.md.
"""

from ood_flow.distributed.group import SINGLE, Dist, DistributedError, launched, session, writes_files
from ood_flow.distributed.norms import GlobalBatchNorm, global_actnorm_init, sync_batchnorm
from ood_flow.distributed.parallel import (broadcast_buffers, check_layout, describe, log_prob_fn, loss_scale,
                                           merge_sums, shard)
from ood_flow.distributed.rows import gather_rows, interleave, own_batches

__all__ = ["SINGLE", "Dist", "DistributedError", "GlobalBatchNorm", "broadcast_buffers", "check_layout", "describe",
           "gather_rows", "global_actnorm_init", "interleave", "launched", "log_prob_fn", "loss_scale", "merge_sums",
           "own_batches", "session", "shard", "sync_batchnorm", "writes_files"]
