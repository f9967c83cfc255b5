"""What tests/test_distributed.py runs under ``torchrun --nproc_per_node 2`` (one launch for several checks).

Usage: distributed_job.py OUT_DIR DATA. Trains (with --sync-bn) for 5 and for 3 steps, trains a Glow
for one step and saves each rank's ActNorm values, and scores the 5-step model; every call runs in
the process group this script starts, as a user's own script would.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ood_flow import TrainConfig, score_source, train_flow
from ood_flow.flows.layers import ActNorm

SMALL = {"channels": 4, "blocks": 1}


def config(steps: int) -> TrainConfig:
    return TrainConfig(max_steps=steps, batch_size=16, lr=1e-3, seed=0)


def main(out: Path, data: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    train_flow(data, config(5), out=out / "five.pt", model_options=SMALL, sync_bn=True, overwrite=True)
    train_flow(data, config(3), out=out / "three.pt", model_options=SMALL, sync_bn=True, overwrite=True)
    glow = train_flow(data, config(1), out=out / "glow.pt", model="glow",
                      model_options={"channels": 4, "scales": 1, "couplings": 2, "blocks": 1}, overwrite=True)
    values = [torch.cat([m.bias.flatten(), m.log_scale.flatten()]) for m in glow.flow.modules()
              if isinstance(m, ActNorm)]
    torch.save(torch.cat(values), out / f"actnorm-rank{rank}.pt")
    score_source(data, out / "five.pt", out=out / "scores.h5", batch_size=16)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
