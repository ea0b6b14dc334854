"""No connection may leave the machine while the tests run.

Python imports `sitecustomize` at start-up from the first folder on its path that has one;
tests/conftest.py puts this folder first on PYTHONPATH, so the pytest process and every
`python main.py` it starts run with `socket.connect` (and DNS look-ups) refused for anything
but loopback and Unix sockets. A test that needed the network would fail with ConnectionRefusedError
naming the address it tried.
"""

from __future__ import annotations

import ipaddress
import socket

_LOCAL_NAMES = {None, "", "localhost", "localhost.localdomain", "ip6-localhost"}


def _is_local(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(address) -> None:
    raise ConnectionRefusedError(f"network access is blocked in the tests (tried {address!r})")


def _guarded(original):
    def connect(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            _refuse(address)
        return original(self, address, *args)

    return connect


def _guarded_getaddrinfo(original):
    def getaddrinfo(host, *args, **kwargs):
        if not _is_local(host):
            _refuse(host)
        return original(host, *args, **kwargs)

    return getaddrinfo


def block_network() -> None:
    if getattr(socket, "_tests_block_network", False):
        return
    socket.socket.connect = _guarded(socket.socket.connect)
    socket.socket.connect_ex = _guarded(socket.socket.connect_ex)
    socket.getaddrinfo = _guarded_getaddrinfo(socket.getaddrinfo)
    socket._tests_block_network = True


block_network()
