"""Data-parallel training through PyTorch's elastic launcher (`torch.distributed.run`, i.e. torchrun).

    if prepare_processes(config):          # asks for more processes than this one
        return launch(train_family, family, setup, params, root, config=config, callbacks=[...])

`launch` pickles the call into a fresh temporary folder and runs, in a child process,

    python -m torch.distributed.run --nproc-per-node N --max-restarts 0
        (--standalone | --nnodes M --rdzv-backend c10d --rdzv-endpoint host:port)
        -m spectral_training.training.launch <folder>

Each worker initialises the process group from torchrun's environment (gloo on CPU, NCCL on CUDA:
`distributed.setup_distributed`), makes the call (the engine then wraps the model in DDP, shards
every epoch's order and lets rank 0 alone write checkpoints, reports and callbacks), and rank 0
writes its return value into the folder; `launch` returns it in the calling process. A worker
that raises writes its exception there too, and `launch` raises it again. Nothing here
schedules, restarts or places processes: torchrun and its rendezvous do.

Multi-node: the node that calls `launch` (e.g. `kedro run` with `train.nnodes: 2` and
`train.rdzv_endpoint`) runs one torchrun agent; every other node joins the same rendezvous with

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint host:29500 \\
        -m spectral_training.training.launch --join

A joining worker receives the call from a worker that has the folder, through the process
group, so only the checkpoints' folder needs to be shared between nodes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from spectral_training.training import distributed
from spectral_training.training.config import TrainConfig

logger = logging.getLogger("spectral_training.training")

CALL_FILE = "call.pkl"
RESULT_FILE = "result.pkl"
ERROR_FILE = "error-rank{rank}.pkl"
MODULE = "spectral_training.training.launch"


class LaunchError(RuntimeError):
    """The worker processes ended without a result (a rank was killed, or torchrun failed to start)."""


def prepare_processes(config: TrainConfig) -> bool:
    """True when `config` asks for more processes than this one and the caller must `launch` them.

    Inside a torchrun worker (WORLD_SIZE > 1 in the environment) the process group is initialised
    here and False is returned: the caller trains in this process, as one rank.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        distributed.setup_distributed()
        return False
    return config.nproc_per_node * config.nnodes > 1


def torchrun_command(folder: Path | None, config: TrainConfig) -> list[str]:
    """The `python -m torch.distributed.run ...` command line of a launch (`folder` None: join)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(config.nproc_per_node),
               "--max-restarts", "0"]
    if config.nnodes > 1:
        command += ["--nnodes", str(config.nnodes), "--rdzv-backend", config.rdzv_backend,
                    "--rdzv-endpoint", str(config.rdzv_endpoint)]
    else:
        command += ["--standalone"]  # a private rendezvous on a free local port
    return command + ["-m", MODULE, str(folder) if folder is not None else "--join"]


def launch(function: Callable[..., Any], *args: Any, config: TrainConfig, **kwargs: Any) -> Any:
    """Run `function(*args, **kwargs)` in `config.nproc_per_node` x `config.nnodes` torchrun workers.

    `function`, its arguments and its return value must pickle (the function by reference: a
    module-level function). Returns rank 0's return value.
    Raises:
        the worker's own exception (rank 0's, else the lowest rank's), with a note naming the rank;
        LaunchError when the workers ended without a result or an exception (e.g. one was killed).
    """
    folder = Path(tempfile.mkdtemp(prefix="spectral-launch-"))
    try:
        try:
            call = pickle.dumps((function, args, kwargs))
        except Exception as error:  # e.g. a callback holding a lock, a live connection or a lambda
            raise LaunchError(
                f"cannot send the training call to the worker processes: {type(error).__name__}: {error}. "
                "Everything given to it (model setup, parameters, callbacks) must pickle; train this run in "
                "one process (train.nproc_per_node: 1) or make the object picklable"
            ) from error
        (folder / CALL_FILE).write_bytes(call)
        command = torchrun_command(folder, config)
        logger.info("launching %d training process(es): %s", config.nproc_per_node * config.nnodes,
                    " ".join(command))
        if config.nnodes > 1:
            logger.info("on each of the other %d node(s), run: torchrun --nnodes %d --nproc-per-node %d "
                        "--rdzv-backend %s --rdzv-endpoint %s -m %s --join", config.nnodes - 1, config.nnodes,
                        config.nproc_per_node, config.rdzv_backend, config.rdzv_endpoint, MODULE)
        returncode = _run_forwarding_signals(command)
        if (folder / RESULT_FILE).is_file():
            with open(folder / RESULT_FILE, "rb") as handle:
                return pickle.load(handle)
        errors = _worker_errors(folder)
        silent = [rank for rank in range(config.nproc_per_node) if rank not in errors] if config.nnodes == 1 else []
        if errors and not silent:
            raise errors[min(errors)]  # every local rank raised: the first one's exception says why
        # A rank that left no exception was killed (SIGKILL, out of memory...); the others then
        # failed in a collective, which says nothing useful.
        raise LaunchError(
            f"the training processes ended with exit code {returncode} and no result"
            # torchrun stops the survivors when one rank dies; on a busy machine that can come before
            # they write their own error, so the killed rank is among these, not always alone
            + (f": rank(s) {silent} died without an error (killed, or stopped by torchrun after another "
               "rank died)" if silent else "")
            + "; torchrun's log above says more. The last checkpoint is kept: run the same command to resume "
            "from it"
        ) from (errors[min(errors)] if errors else None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_forwarding_signals(command: list[str]) -> int:
    """Run torchrun and wait; a SIGTERM/SIGINT to this process goes on to torchrun, which passes it
    to every worker (they checkpoint and stop), so the result of an interrupted run still comes back."""
    process = subprocess.Popen(command)

    def forward(signum: int, frame: Any) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    with _signal_handlers(forward):
        return process.wait()


@contextlib.contextmanager
def _signal_handlers(handler: Callable[[int, Any], None]) -> Iterator[None]:
    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: signals cannot be caught here, torchrun still gets the terminal's
        pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _worker_errors(folder: Path) -> dict[int, BaseException]:
    """The exceptions the workers wrote, by rank."""
    errors = {}
    for path in folder.glob(ERROR_FILE.format(rank="*")):
        with open(path, "rb") as handle:
            errors[int(path.stem.split("rank")[-1])] = pickle.load(handle)
    return errors


# ---------------------------------------------------------------------------------------- workers
def run_worker(folder: Path | None) -> None:
    """One torchrun worker: join the process group, make the call, rank 0 writes the result."""
    distributed.setup_distributed()
    rank = distributed.rank()
    try:
        call = _receive_call(folder)
        function, args, kwargs = pickle.loads(call)
        result = function(*args, **kwargs)
        if distributed.is_distributed():
            # The result travels to the worker that holds the folder (rank 0, unless joined nodes
            # took the first ranks of the rendezvous).
            box = [result]
            distributed.broadcast_object_list(box, source=0)
            result = box[0]
        if folder is not None and rank == _first_holder():
            _write_pickle(folder / RESULT_FILE, result)
    except BaseException as error:
        if folder is not None:
            _write_error(folder, rank, error)
        raise
    finally:
        distributed.cleanup_distributed()


_HOLDERS: list[bool] | None = None


def _receive_call(folder: Path | None) -> bytes:
    """The pickled call: read from `folder`, or (joined nodes) sent by the lowest rank that has it."""
    global _HOLDERS
    data = (folder / CALL_FILE).read_bytes() if folder is not None else None
    if not distributed.is_distributed():
        if data is None:
            raise LaunchError("--join needs a multi-process torchrun launch (WORLD_SIZE > 1)")
        return data
    _HOLDERS = [bool(flag) for flag in distributed.gather_objects(data is not None)]
    if not any(_HOLDERS):
        raise LaunchError("no worker of this rendezvous has the call to run: start one node through `kedro run` "
                          "(train.nnodes, train.rdzv_endpoint) or with the folder argument")
    box = [data]
    distributed.broadcast_object_list(box, source=_HOLDERS.index(True))
    return box[0]


def _first_holder() -> int:
    return _HOLDERS.index(True) if _HOLDERS is not None else 0


def _write_pickle(path: Path, value: Any) -> None:
    temp = path.with_suffix(".tmp")
    with open(temp, "wb") as handle:
        pickle.dump(value, handle)
    os.replace(temp, path)


def _write_error(folder: Path, rank: int, error: BaseException) -> None:
    text = "".join(traceback.format_exception(error))
    try:
        error.add_note(f"(raised in training process rank {rank})")
        pickle.loads(pickle.dumps(error))
    except Exception:  # an exception that does not pickle: keep its text
        error = LaunchError(f"training process rank {rank} failed:\n{text}")
    with contextlib.suppress(OSError):
        _write_pickle(folder / ERROR_FILE.format(rank=rank), error)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=(
        "A torchrun worker of a training launched by `kedro run ... train.nproc_per_node=N`. Run it through "
        "torchrun: with the launch folder on the launching node, with --join on the other nodes."))
    parser.add_argument("folder", nargs="?", type=Path, help="the launch folder (call.pkl inside)")
    parser.add_argument("--join", action="store_true", help="join a launch started on another node")
    options = parser.parse_args(argv)
    if (options.folder is None) == (not options.join):
        parser.error("give either the launch folder or --join")
    level = logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING
    logging.basicConfig(level=level, format=f"[rank {os.environ.get('RANK', '0')}] %(levelname)s %(name)s: %(message)s")
    run_worker(options.folder)


if __name__ == "__main__":
    main()
