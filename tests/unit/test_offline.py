"""The unit tests' network guard (tests/unit/conftest.py) fires beyond this machine and nowhere else."""

import socket
import urllib.request

import pytest


def test_connecting_beyond_this_machine_raises():
    with pytest.raises(RuntimeError, match="unit tests run offline"):
        socket.create_connection(("203.0.113.7", 443), timeout=1)  # TEST-NET-3: an address, no lookup
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(RuntimeError, match="offline"):
        udp.sendto(b"x", ("198.51.100.1", 53))


def test_looking_up_a_name_raises():
    with pytest.raises(RuntimeError, match=r"a name lookup for 'huggingface\.co'"):
        urllib.request.urlopen("https://huggingface.co", timeout=1)


def test_loopback_stays_allowed():
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname(), timeout=1):
        connection, _ = server.accept()
        connection.close()
