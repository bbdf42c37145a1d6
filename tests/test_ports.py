"""Choosing the local Prefect server's port: a port someone listens on is taken; one whose last
server just stopped (its connections in TIME_WAIT) is free again, as it is to the next server."""

from __future__ import annotations

import socket

from plantcad_flows.cluster.processes import port_free


def test_listening_port_is_taken_and_a_stopped_servers_port_is_free():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert not port_free(port)

    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end of the connection sits in TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    # a plain bind would fail here (EADDRINUSE); a server binding with SO_REUSEADDR would not
    plain = socket.socket()
    try:
        plain.bind(("127.0.0.1", port))
        in_time_wait = False
    except OSError:
        in_time_wait = True
    finally:
        plain.close()
    assert in_time_wait
    assert port_free(port)
