"""Keep the DDP rendezvous store on loopback when a job runs on one machine.

torch.distributed's TCPStore, which rank 0 of a Ray Train worker group serves while a stage trains,
binds every interface (``::``) whatever the master address; torch 2.13 only binds a given address
when it is handed an already bound socket (``TCPStore(master_listen_fd=…)``), and Ray Train 2.60's
process-group setup does not do that. :func:`bind_store_to_loopback`, installed in every Ray worker
by ``jobs/run.py`` for a Ray instance it starts itself (``runtime_env["worker_process_setup_hook"]``),
makes rank 0 bind the store's socket to 127.0.0.1 itself whenever the master address is loopback —
which it is exactly when the local Ray instance binds loopback (docs/reliability.md, "Listeners").
On a cluster the master address is a node's address, and nothing changes.
"""

from __future__ import annotations

import importlib
import logging
import socket

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def bind_store_to_loopback() -> bool:
    """Patch torch's env:// rendezvous so that a loopback master serves its store on 127.0.0.1 only.
    Idempotent; returns False (and changes nothing) where torch's internals differ."""
    try:
        rdzv = importlib.import_module("torch.distributed.rendezvous")
        from torch.distributed import TCPStore
    except ImportError:
        return False
    original = getattr(rdzv, "_create_c10d_store", None)
    if original is None or getattr(original, "_raypipe_loopback", False):
        return original is not None

    def create_store(hostname, port, rank, world_size, timeout, use_libuv=True):
        if rank == 0 and hostname in LOOPBACK and not rdzv._torchelastic_use_agent_store():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(128)
            return TCPStore(host_name="127.0.0.1", port=port, world_size=world_size, is_master=True,
                            timeout=timeout, multi_tenant=True, master_listen_fd=sock.detach(),
                            use_libuv=use_libuv)
        return original(hostname, port, rank, world_size, timeout, use_libuv)

    create_store._raypipe_loopback = True
    rdzv._create_c10d_store = create_store
    return True
