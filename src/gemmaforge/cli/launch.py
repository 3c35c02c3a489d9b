"""The `launch` verb: `gemmaforge train` on several processes (GPUs or CPU cores, one machine
or several) through PyTorch's own launcher, `torch.distributed.run` (torchrun).

Each process runs the unchanged `gemmaforge train`; Accelerate joins the process group that
torchrun sets up (NCCL on GPUs, gloo on CPUs) and wraps the model in DDP. `accelerate launch`
works the same way for FSDP / DeepSpeed set-ups (docs/distributed.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Annotated

import typer


def launch(
    config: Annotated[str, typer.Argument(help="YAML config file.", show_default=False)],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="section.field=value settings passed to train.", show_default=False),
    ] = None,
    nproc: Annotated[int, typer.Option(min=1, help="Processes on this machine.")] = 1,
    nnodes: Annotated[int, typer.Option(min=1, help="Machines taking part.")] = 1,
    node_rank: Annotated[int, typer.Option(min=0, help="This machine's index (0 is main).")] = 0,
    master_addr: Annotated[
        str, typer.Option(help="Address of machine 0, reachable from every machine.")
    ] = "127.0.0.1",
    master_port: Annotated[int, typer.Option(help="Port on machine 0 for the rendezvous.")] = 29500,
    resume: Annotated[bool, typer.Option(help="Continue the run (any process count).")] = False,
) -> None:
    """Train on several processes (torchrun): the same config and data, the same global batch.
    Exit code: the worst of the processes'."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        f"--nnodes={nnodes}",
        f"--node-rank={node_rank}",
        f"--master-addr={master_addr}",
        f"--master-port={master_port}",
        "-m",
        "gemmaforge",
        "train",
        config,
        *(overrides or []),
        *(["--resume"] if resume else []),
    ]
    # One thread per process and core: N processes each using every core fight for them.
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    raise typer.Exit(subprocess.call(command, env=env))
