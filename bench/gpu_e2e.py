#!/usr/bin/env python3
"""End to end through a running camserve server (issue 8's "4000x3000 JPEG ->
predictions + overlay PNG in the server"): POST /v1/explain with the photo,
N times, each time a new image (a JPEG comment segment carrying a counter
changes the bytes, so the caches miss while the pixels stay the same), on one
kept-alive connection.  The first WARMUP answers (plan building, CUDA Graph
capture) are not counted.  Prints one JSON object: client-side wall time and
the server's own timings_ms, median and p90 of each.

    python3 bench/gpu_e2e.py --port P --photo photo.jpg [--n 30] [--warmup 5] [--query 'method=gradcam']
                             [--orientation 6] [--client K]
"""
import argparse
import http.client
import json
import statistics
import struct
import sys
import time


def variant(jpeg, i):
    # SOI, then a COM segment (0xFFFE, big-endian length incl. itself), then the rest
    payload = f"camserve gpu_e2e {i}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def with_orientation(jpeg, o):
    """The JPEG with an APP1 Exif segment saying EXIF orientation o, right
    after SOI: big-endian TIFF, one IFD entry (0x0112, SHORT, 1, o)."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + \
        struct.pack(">HHIHH", 0x0112, 3, 1, o, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--photo", required=True)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--query", default="")
    ap.add_argument("--orientation", type=int, default=0,
                    help="tag the photo with this EXIF orientation (6: a portrait photo from a phone)")
    ap.add_argument("--client", type=int, default=0,
                    help="this client's number, when several run at once: their images differ too")
    a = ap.parse_args()
    jpeg = open(a.photo, "rb").read()
    if a.orientation:
        jpeg = with_orientation(jpeg, a.orientation)
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
    wall, server, errors, cache = [], {}, [], {}
    path = "/v1/explain" + (f"?{a.query}" if a.query else "")
    t_start = time.perf_counter()
    for i in range(a.warmup + a.n):
        body = variant(jpeg, f"{a.client}.{i + int(time.time())}")
        t0 = time.perf_counter()
        conn.request("POST", path, body=body, headers={"Content-Type": "image/jpeg"})
        r = conn.getresponse()
        data = r.read()
        dt = (time.perf_counter() - t0) * 1e3
        if r.status != 200:
            errors.append(f"{r.status}: {data[:200]!r}")
            continue
        d = json.loads(data)
        if i < a.warmup:
            continue
        wall.append(dt)
        cache[d.get("cache", "?")] = cache.get(d.get("cache", "?"), 0) + 1
        for k, v in d.get("timings_ms", {}).items():
            server.setdefault(k, []).append(v)
    out = {"photo_bytes": len(jpeg), "n": len(wall), "wall_s": time.perf_counter() - t_start, "errors": errors[:5], "error_count": len(errors), "cache": cache}
    if wall:
        out["client_ms"] = {"median": statistics.median(wall), "p90": q(wall, 0.9), "min": min(wall)}
        out["server_ms"] = {k: {"median": statistics.median(v), "p90": q(v, 0.9)} for k, v in server.items()}
    print(json.dumps(out))
    return 0 if wall else 1


if __name__ == "__main__":
    sys.exit(main())
