"""The Ray cluster a command runs on: a local Ray of its own, unless an address names one.

Ray's own default (``ray.init()`` with no address) joins whatever cluster ``/tmp/ray/ray_current_cluster``
records: another user's, another job's, or one a test suite left behind, possibly dead. The harness
never does that: it joins a cluster only when ``--address`` or ``$RAY_ADDRESS`` names one (``auto``
included), and otherwise starts a fresh local Ray that ends with the command.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def ray_target(address: str | None = None) -> str:
    """The address ray.init gets: the one given, else $RAY_ADDRESS, else "local" (always a new local Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def start_ray(address: str | None = None) -> bool:
    """Start (or join) Ray once per process; returns True when it is a local Ray of this command's own."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local Ray needs no token under ~/.ray
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    target = ray_target(address)
    if not ray.is_initialized():
        ray.init(address=target, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return target == "local"


def check_resources(per_worker: dict[str, float], workers: int, local: bool) -> None:
    """Refuse (local Ray: it cannot grow, so the trial would wait forever) or warn about (a cluster, whose
    autoscaler may add nodes) a request that no node of the cluster can hold."""
    import ray

    from harness.core.config import ConfigError

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    wanted = {k: v for k, v in per_worker.items() if v > 0}
    if any(all(node.get(k, 0) >= v for k, v in wanted.items()) for node in nodes):
        return
    have = "; ".join(", ".join(f"{k} {node.get(k, 0):g}" for k in wanted) for node in nodes) or "no node"
    ask = ", ".join(f"{k} {v:g}" for k, v in wanted.items())
    if local:
        hint = (
            "no GPU here: set `resources: {gpus: 0}` (trials then run on the CPU) or pass --address to use a "
            "cluster with GPUs"
            if wanted.get("GPU")
            else "lower the suite's `resources`"
        )
        raise ConfigError(
            f"suite `resources`: each of its {workers} worker(s) asks for {ask}, but this machine's "
            f"local Ray has {have}: {hint}"
        )
    logger.warning(
        f"each worker asks for {ask}, but no node of the cluster has it now ({have}); the trials wait "
        f"until the autoscaler adds one"
    )
