"""The trivial rank function that both launch-overhead peers in ``bench/train.py`` run.

It lives in its own module with stdlib imports only, so that a rank that unpickles it by
reference imports nothing else, exactly like the bare ``torchrun bench/trivial_rank.py`` peer.
"""

from __future__ import annotations

import json
import os
import sys
import time


def trivial(_: object) -> dict[str, float]:
    """Note when the function starts and when its gloo process group is ready, then leave."""
    entered = time.time()
    import torch.distributed as dist

    dist.init_process_group("gloo")
    ready = time.time()
    dist.destroy_process_group()
    return {"entered": entered, "ready": ready}


if __name__ == "__main__":  # the bare peer: torchrun --standalone --nproc_per_node=2 trivial_rank.py OUT
    times = trivial(None)
    if os.environ["RANK"] == "0":
        with open(sys.argv[1], "w") as fh:
            json.dump(times, fh)
