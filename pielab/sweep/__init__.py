"""Sweeps: search spaces, sweep specs, and the Ray Tune + Optuna + W&B runner.

This is the only package that imports ray, optuna and wandb, and it imports them inside the modules
that need them, never here: ``pielab.cli`` imports this package lazily and ``pielab train`` must run on
machines that have none of the three.
"""

import os

# Local Ray on loopback. Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when
# Ray's ray_constants module is imported (ENABLE_RAY_CLUSTER); setting it later changes nothing.
# With it off, ``services.get_node_ip_address()`` answers 127.0.0.1, so ``ray.init(_node_ip_address=
# "127.0.0.1")`` stays 127.0.0.1 (``resolve_ip_for_localhost``); with it on (Linux's default), that
# 127.0.0.1 is replaced by the address the machine routes outwards, and gcs_server and raylet listen
# on every interface. Every pielab module that imports Ray lives in this package, so this line runs
# before any ``import ray`` of a pielab command.
#
# Not with RAY_ADDRESS: ``ray.init()`` then joins that cluster, and the 127.0.0.1 pielab passes must
# resolve to this machine's cluster address to find its raylet, which only Ray's default does. With
# ``--address`` the driver takes its node's address from the cluster (Ray 2.60 ``Node.__init__``) and
# never consults the constant. The value is inherited by the processes a local sweep starts (gcs_server,
# raylet, workers), as intended; a separate ``ray start --address`` must not inherit it (it refuses to
# join a cluster with it off), so cluster scripts set their own.
if not os.environ.get("RAY_ADDRESS"):
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
