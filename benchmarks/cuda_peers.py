"""Runs a PyTorch peer of ``../shared/bench`` (``peers_sine.py``, ``peers_torch.py``) unchanged, on the GPU
when there is one: tensors and modules are made on it (``torch.set_default_device``), the peer's task
batch is drawn on the CPU as written (its CPU generator) and moved there, and every timer reading waits
for the GPU's queued work (``torch.cuda.synchronize``), so the peer's ``tasks/s`` covers the work done.

Usage: python cuda_peers.py --peers-dir DIR --l2l-src SRC {sinusoid-maml,omniglot-maml} {l2l,higher,func}
[--steps N]. Prints the peer's own lines, ``tasks/s N`` last, after a line naming the device.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

SCRIPTS = {"sinusoid-maml": "peers_sine", "omniglot-maml": "peers_torch"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(SCRIPTS))
    parser.add_argument("impl", choices=["l2l", "higher", "func"])
    parser.add_argument("--peers-dir", required=True, help="folder holding peers_sine.py and peers_torch.py")
    parser.add_argument("--l2l-src", required=True, help="unpacked learn2learn 0.2.0 sources")
    parser.add_argument("--steps", type=int, help="timed meta-steps (default: the peer's)")
    args = parser.parse_args()
    import torch

    os.environ["L2L_SRC"] = args.l2l_src
    sys.path.insert(0, os.path.abspath(args.peers_dir))
    peers_torch = importlib.import_module("peers_torch")
    peer = importlib.import_module(SCRIPTS[args.workload])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    where = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"peer {args.impl} on {where}, torch {torch.__version__}")
    if device == "cuda":
        draw = peers_torch.batch

        def batch_on_gpu(generator: torch.Generator) -> tuple[torch.Tensor, ...]:
            with torch.device("cpu"):
                tensors = draw(generator)
            return tuple(t.to(device) for t in tensors)

        peers_torch.batch = batch_on_gpu
        unsynced = time.perf_counter

        def synced() -> float:
            torch.cuda.synchronize()
            return unsynced()

        time.perf_counter = synced
        torch.set_default_device(device)
    sys.argv = [peer.__file__, args.impl] + (["--steps", str(args.steps)] if args.steps else [])
    peer.main()


if __name__ == "__main__":
    main()
