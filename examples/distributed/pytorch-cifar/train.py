"""Distributed data-parallel training of a CIFAR-10-shaped CNN on synthetic data.

Run by examples/distributed/pytorch-cifar/job.yml, one process per rank.  hpcjobs (like
Azure ML) sets MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK, NODE_RANK and
LOCAL_WORLD_SIZE, so ``init_process_group()`` needs no arguments and no launcher
(torchrun) is involved.  The data are random 3x32x32 images around one pattern per
class, generated from a fixed seed: nothing is downloaded, every rank builds the same
set and DistributedSampler gives each rank its own share.  The backend is NCCL when
CUDA really works, else gloo on the CPU.

Every rank prints one ``RANKINFO`` line (its ranks and an all_reduce of RANK + 1, which
must be WORLD_SIZE * (WORLD_SIZE + 1) / 2); rank 0 prints the loss per epoch, logs it to
MLflow when mlflow is installed, and saves the model to ./outputs/model.pt.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

CLASSES = 10


class Net(nn.Module):
    """A small CNN for 3x32x32 images (the shape of CIFAR-10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 8 * 8, 64)
        self.fc2 = nn.Linear(64, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def synthetic_cifar(samples: int, seed: int) -> TensorDataset:
    """Images scattered around one random pattern per class: learnable, and the same on every rank."""
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.randn(CLASSES, 3, 32, 32, generator=gen)
    labels = torch.randint(0, CLASSES, (samples,), generator=gen)
    images = patterns[labels] + 1.5 * torch.randn(samples, 3, 32, 32, generator=gen)
    return TensorDataset(images, labels)


def env_int(name: str) -> int:
    return int(os.environ[name])


def mlflow_or_none() -> Any:
    """mlflow, when it is installed and the job has a run to log to (MLFLOW_RUN_ID), else None."""
    if not os.environ.get("MLFLOW_RUN_ID"):
        return None
    try:
        import mlflow
    except ImportError:
        return None
    return mlflow


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--output", default="outputs")
    args = parser.parse_args()

    rank, world = env_int("RANK"), env_int("WORLD_SIZE")
    local_rank, local_world = env_int("LOCAL_RANK"), env_int("LOCAL_WORLD_SIZE")
    use_cuda = torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        # the processes of a node share its CPUs
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_world))
    # before the process group: the other ranks wait for rank 0 there, idle, while mlflow imports
    tracker = mlflow_or_none() if rank == 0 else None
    dist.init_process_group(backend)

    # every rank takes part: the sum of RANK + 1 over all ranks is world * (world + 1) / 2
    total = torch.tensor([float(rank + 1)], device=device)
    dist.all_reduce(total)
    info = {
        "rank": rank,
        "local_rank": local_rank,
        "world_size": world,
        "node_rank": env_int("NODE_RANK"),
        "local_world_size": local_world,
        "master": f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        "all_reduce": int(total.item()),
        "expected": world * (world + 1) // 2,
        "backend": backend,
    }
    print("RANKINFO " + json.dumps(info, sort_keys=True), flush=True)

    torch.manual_seed(0)  # the same initial weights everywhere (DDP broadcasts rank 0's anyway)
    model = DistributedDataParallel(Net().to(device), device_ids=[local_rank] if use_cuda else None)
    data = synthetic_cifar(args.samples, seed=1234)
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=args.batch_size, sampler=sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        started = time.time()
        sums = torch.zeros(3, device=device)  # loss * n, correct, n
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            out = model(images)
            loss = F.cross_entropy(out, labels)
            loss.backward()
            optimizer.step()
            n = labels.numel()
            sums += torch.tensor([loss.item() * n, (out.argmax(1) == labels).sum().item(), n], device=device)
        dist.all_reduce(sums)
        mean_loss, accuracy = (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()
        if rank == 0:
            print(f"epoch {epoch}: loss {mean_loss:.4f} accuracy {accuracy:.3f} ({time.time() - started:.1f}s, {world} ranks)")
            if tracker is not None:
                tracker.log_metric("loss", mean_loss, step=epoch)
                tracker.log_metric("accuracy", accuracy, step=epoch)

    if rank == 0:
        os.makedirs(args.output, exist_ok=True)
        torch.save(model.module.state_dict(), os.path.join(args.output, "model.pt"))
        print(f"model saved to {args.output}/model.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
