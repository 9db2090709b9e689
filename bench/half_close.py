#!/usr/bin/env python3
"""Clients that half-close (shutdown(SHUT_WR)) after their request, against a
running `camserve serve` on 127.0.0.1: how many got their answer and then
the end of the connection ("ok"), got it but the connection stayed open
("lingers", 2 s), or got nothing ("empty").

    python3 bench/half_close.py PORT PNG N

Requests rotate over GET /healthz, a classify with a 5-byte body (415) and a
classify of PNG (200); the server should serve a small model, e.g.
`camserve serve --port PORT --workers 1 --model tests/golden/resnet_basic/model.onnx`.
Prints the counts per (request, outcome)."""
import collections
import socket
import sys

port, png, n = int(sys.argv[1]), open(sys.argv[2], "rb").read(), int(sys.argv[3])
reqs = [b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /v1/classify?topk=2 HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n"
        % len(png) + png]
names = ["healthz", "classify 415", "classify 200"]
res = collections.Counter()
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(2)
    s.sendall(reqs[i % 3])
    s.shutdown(socket.SHUT_WR)
    data, kind = b"", "ok"
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
    except socket.timeout:
        kind = "lingers"
    except ConnectionResetError:
        kind = "reset"
    if not data:
        kind = "empty" if kind == "ok" else kind + "+empty"
    res[(names[i % 3], kind)] += 1
    s.close()
for (name, kind), count in sorted(res.items()):
    print(f"{name:14s} {kind:10s} {count}")
