"""Free TCP ports on 127.0.0.1 for the servers the tests start (Ray, Slurm, the S3 server)."""

from __future__ import annotations

import socket
from collections.abc import Container


def free_ports(count: int, avoid: Container[int] = ()) -> list[int]:
    """``count`` distinct free ports, none in ``avoid``. Every socket stays bound until all ports are
    chosen, so the kernel cannot hand out one port twice (two servers of one test would then clash)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
            port = s.getsockname()[1]
            if port not in avoid:
                ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports
