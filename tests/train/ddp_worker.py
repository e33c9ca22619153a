"""A TrainLoop run on a linear model, launched by tests/train/test_distributed.py as one process
(``python``) or several (``torchrun``). Writes result.json: per-step losses, final weights and how
many gradient all-reduces DDP ran."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch

from prefalign.config import TrainConfig
from prefalign.train import TrainLoop


@dataclasses.dataclass
class WorkerConfig:
    output_dir: str
    train: TrainConfig
    resume: bool = False
    overwrite: bool = False


def main(output_dir: str, plan_json: str, micro_batch_size: int) -> None:
    plan = json.loads(plan_json)
    train = TrainConfig(
        learning_rate=0.1,
        batch_size=8,
        micro_batch_size=micro_batch_size,
        lr_scheduler="constant",
        max_grad_norm=0,
    )
    loop = TrainLoop.open(WorkerConfig(output_dir, train), "linear")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    y = torch.randn(16, generator=torch.Generator().manual_seed(2))
    wrapped = loop.prepare("policy", model, len(plan))
    reduces = [0]
    if loop.accelerator.num_processes > 1:

        def counting_allreduce(state, bucket):  # noqa: ANN001 (DDP rejects string annotations)
            reduces[0] += 1
            tensor = bucket.buffer().div_(torch.distributed.get_world_size())
            return (
                torch.distributed.all_reduce(tensor, async_op=True).get_future().then(lambda f: f.value()[0])
            )

        wrapped.register_comm_hook(None, counting_allreduce)
    loop.restore()
    for step in loop.steps(len(plan)):
        for micro in loop.micro_batches(plan[step]):
            index = torch.tensor(micro.indices)
            losses = (wrapped(x[index].to(loop.device)).squeeze(-1) - y[index].to(loop.device)) ** 2
            loop.backward(losses, micro)
        loop.optimizer_step(step)
    result = loop.finish(lambda final: None)
    if loop.is_main:
        payload = {
            "losses": [r["loss"] for r in loop.run.read_metrics()],
            "weight": loop.unwrap().weight.detach().flatten().tolist(),
            "bias": loop.unwrap().bias.detach().tolist(),
            "steps": result.steps,
        }
        Path(output_dir, "result.json").write_text(json.dumps(payload))
    Path(output_dir, f"reduces-{loop.accelerator.process_index}.json").write_text(json.dumps(reduces[0]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
