#!/usr/bin/env python3
"""The TLS stacks Pingora can use, compared on the proxy's server side (issue 26).

Builds `tls-server` (this directory) once per stack, each into its own
target directory, and measures every build the same way:

- instructions per TLS 1.3 connection (callgrind, user space, all threads):
  a full handshake + one small GET + close, and the same offering the
  first connection's session (resumed); bench.py's `tls_connections`
  (Python's ssl, Debian's OpenSSL 3.0, as the client) with the
  certificate bench.py makes (self-signed ECDSA P-256);
- instructions per keep-alive request on established connections: after
  200 warm-up requests on 4 TLS connections the counters are zeroed, then
  10,000 requests (~110 bytes) and responses (~150 bytes) go over the same
  4 connections one at a time;
- resident memory per idle TLS connection: like bench.py's
  `Bench.idle_memory`, 2000 connections after one exchange each, VmRSS
  before and after (after 50 warm-up connections);
- on-CPU time (user + kernel) per connection and per keep-alive request
  without valgrind (`native`), a cross-check of the counts;
- whether an offered session resumes with the stack's stateless tickets
  and with its session cache alone (`TLS_TICKETS=stateful`).

Usage: bench/tls-libs/compare.py [--stacks plain,openssl-3.6,...] [--no-build]
Prints a markdown table (stdout) and writes the numbers as JSON (--json).
Standard library only; needs cargo, valgrind, openssl (CLI), cmake and
clang (BoringSSL), Debian's libssl-dev (the system OpenSSL build).
"""

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from bench import (free_port, insecure_client_context, log, run, status_kb,  # noqa: E402
                   tls_connections, wait_port)

# key, label, cargo features, extra environment of the build
STACKS = [
    ("plain", "no TLS (baseline)", "plain", {}),
    ("openssl-3.6", "OpenSSL 3.6.3, vendored (Pingora `openssl`, the proxy today)", "openssl-vendored", {}),
    ("openssl-3.0", "Debian's OpenSSL 3.0 (`OPENSSL_NO_VENDOR=1`)", "openssl", {"OPENSSL_NO_VENDOR": "1"}),
    ("boringssl", "BoringSSL (boring 5, Pingora `boringssl`)", "boring", {}),
    ("rustls-ring", "rustls 0.23 + ring (Pingora `rustls`)", "rustls-ring", {}),
    ("rustls-aws-lc", "rustls 0.23 + aws-lc-rs (rustls' default provider)", "rustls-aws", {}),
]
REQUEST = (b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: tls-libs-bench/1.0\r\nAccept: */*\r\n"
           b"X-Request-Id: 0123456789abcdef0123\r\n\r\n")
BODY = b"frontend-proxy bench backend: 50 bytes of body...\n"


def target_dir(key):
    base = os.environ.get("TLS_LIBS_TARGET") or os.environ.get("CARGO_TARGET_DIR") or os.path.join(HERE, "target")
    return os.path.join(base, key)


def build(key, features, env):
    log(f"building {key} (--features {features})")
    e = dict(os.environ, CARGO_TARGET_DIR=target_dir(key), **env)
    subprocess.run(["cargo", "build", "--release", "--locked", "--features", features], cwd=HERE, env=e, check=True)


def binary(key):
    return os.path.join(target_dir(key), "release", "tls-server")


class Server:
    """One tls-server, optionally under callgrind."""

    def __init__(self, key, workdir, callgrind=False, tickets="stateless"):
        self.key, self.tls = key, key != "plain"
        self.port = free_port()
        self.cg = os.path.join(workdir, f"callgrind-{key}.out")
        prefix = (["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.cg}.%p"] if callgrind else [])
        cmd = prefix + [binary(key), str(self.port), f"{workdir}/cert.pem", f"{workdir}/key.pem"]
        self.log = open(os.path.join(workdir, f"{key}.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, TLS_TICKETS=tickets))
        wait_port(self.port, self.proc, timeout=60 if callgrind else 10)

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return insecure_client_context().wrap_socket(s, server_hostname="bench") if self.tls else s

    def zero(self):
        run(["callgrind_control", "--zero", str(self.proc.pid)], timeout=60)
        d = os.path.dirname(self.cg)
        for f in os.listdir(d):
            if f.startswith(os.path.basename(self.cg)):
                os.remove(os.path.join(d, f))

    def dump(self):
        """Instructions since `zero`."""
        run(["callgrind_control", "--dump", str(self.proc.pid)], timeout=60)
        d, total = os.path.dirname(self.cg), 0
        for f in os.listdir(d):
            if f.startswith(os.path.basename(self.cg)):
                with open(os.path.join(d, f)) as fh:
                    total += next((int(line.split()[1]) for line in fh
                                   if line.startswith(("summary:", "totals:"))), 0)
        if not total:
            raise RuntimeError(f"callgrind wrote no counts for {self.key}")
        return total

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def exchange(s):
    """One request and its response on a keep-alive connection."""
    s.sendall(REQUEST)
    got = b""
    while not (b"\r\n\r\n" in got and got.endswith(BODY)):
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed before its response")
        got += chunk
    if not got.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {got[:200]!r}")


def handshakes(key, workdir, n):
    """Instructions per connection, full and resumed, and the resumed share."""
    out = {}
    for mode in ("full", "resumed"):
        srv = Server(key, workdir, callgrind=True)
        try:
            tls_connections(srv.port, 20, resume=mode == "resumed")
            srv.zero()
            resumed = tls_connections(srv.port, n, resume=mode == "resumed")
            out[mode] = srv.dump() / n
            if mode == "resumed":
                out["resumed_share"] = resumed / n
        finally:
            srv.stop()
    return out


def keepalive(key, workdir, n, conns=4):
    """Instructions per request on `conns` established keep-alive connections."""
    srv = Server(key, workdir, callgrind=True)
    socks = []
    try:
        socks = [srv.connect() for _ in range(conns)]
        for i in range(200):
            exchange(socks[i % conns])
        srv.zero()
        for i in range(n):
            exchange(socks[i % conns])
        return srv.dump() / n
    finally:
        for s in socks:
            s.close()
        srv.stop()


def idle_memory(key, workdir, n):
    """KiB of VmRSS per idle connection after one exchange (bench.py's method)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 1000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n + 1000, hard), hard))
    srv = Server(key, workdir)
    socks = []

    def open_served(count):
        new = [srv.connect() for _ in range(count)]
        for s in new:
            exchange(s)
        socks.extend(new)

    try:
        open_served(50)
        before = status_kb(srv.proc.pid, "VmRSS")
        open_served(n)
        time.sleep(0.3)
        return (status_kb(srv.proc.pid, "VmRSS") - before) / n
    finally:
        for s in socks:
            s.close()
        srv.stop()


def cpu_ns(pid):
    """On-CPU time of all the process's threads (user and kernel), ns."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


def connections(port, n, resume):
    """bench.py's `tls_connections` with TCP_NODELAY on the client, as
    browsers and curl set it: BoringSSL sends its TLS 1.3 tickets with the
    server's first write, not after the handshake, so a client that sends
    its request behind its unacknowledged Finished with Nagle on waits for
    the server's delayed ACK (40 ms), and the server's on-CPU time then
    includes idle wake-ups. Returns how many handshakes resumed."""
    ctx = insecure_client_context()
    session, resumed = None, 0
    for _ in range(n):
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(raw, server_hostname="bench", session=session if resume else None) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            if not data.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected response: {data[:200]!r}")
            resumed += s.session_reused
            if resume and session is None:
                session = s.session
    return resumed


def native(key, workdir, conns, requests):
    """On-CPU µs (user + kernel) per connection and per keep-alive request,
    without valgrind: a cross-check of the counts, whose crypto runs the
    code paths valgrind's CPU allows (no AVX-512, VAES) rather than this
    CPU's. Noisy where other work shares the machine."""
    srv = Server(key, workdir)
    out, socks = {}, []
    try:
        if srv.tls:
            for mode in ("full", "resumed"):
                connections(srv.port, 20, resume=mode == "resumed")
                t0 = cpu_ns(srv.proc.pid)
                connections(srv.port, conns, resume=mode == "resumed")
                out[f"{mode}_us"] = (cpu_ns(srv.proc.pid) - t0) / conns / 1000
        socks = [srv.connect() for _ in range(4)]
        for i in range(200):
            exchange(socks[i % 4])
        t0 = cpu_ns(srv.proc.pid)
        for i in range(requests):
            exchange(socks[i % 4])
        out["keepalive_us"] = (cpu_ns(srv.proc.pid) - t0) / requests / 1000
        return out
    finally:
        for s in socks:
            s.close()
        srv.stop()


def resumes(key, workdir, tickets):
    """Share of 20 offers of the first connection's session that resumed."""
    srv = Server(key, workdir, tickets=tickets)
    try:
        return tls_connections(srv.port, 21, resume=True) / 20
    finally:
        srv.stop()


def fmt(v):
    return "–" if v is None else f"{v:,.0f}"


def table(results):
    base = results.get("plain", {})
    lines = ["| stack | full handshake | resumed (ticket) | keep-alive request | TLS share of it |"
             " idle KiB / conn | resumes: tickets / cache only |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for key, label, _, _ in STACKS:
        r = results.get(key)
        if not r:
            continue
        share = (r["keepalive"] - base["keepalive"]) if base and key != "plain" else None
        res = ("–" if key == "plain"
               else f"{r['resumes_stateless'] * 100:.0f} % / {r['resumes_stateful'] * 100:.0f} %")
        resumed = fmt(r.get("resumed"))
        if r.get("resumed_share") is not None:
            resumed += f" ({r['resumed_share'] * 100:.0f} %)"
        lines.append(f"| {label} | {fmt(r.get('full'))} | {resumed} | {fmt(r['keepalive'])} | {fmt(share)} |"
                     f" {r['idle_kib']:.1f} | {res} |")
    return "\n".join(lines + [""] + native_table(results))


def native_table(results):
    lines = ["On-CPU time of the server (µs, user + kernel, no valgrind; noisy):", "",
             "| stack | full handshake | resumed | keep-alive request |", "|---|---:|---:|---:|"]
    for key, label, _, _ in STACKS:
        r = results.get(key)
        if r and "keepalive_us" in r:
            lines.append(f"| {label} | {fmtf(r.get('full_us'))} | {fmtf(r.get('resumed_us'))} |"
                         f" {fmtf(r['keepalive_us'])} |")
    return lines


def fmtf(v):
    return "–" if v is None else f"{v:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stacks", default=",".join(s[0] for s in STACKS))
    ap.add_argument("--no-build", action="store_true", help="use the binaries built before")
    ap.add_argument("--handshakes", type=int, default=200, help="connections per handshake count")
    ap.add_argument("--requests", type=int, default=10000, help="keep-alive requests (4 connections)")
    ap.add_argument("--idle", type=int, default=2000, help="idle connections")
    ap.add_argument("--native-conns", type=int, default=1000, help="connections per on-CPU time")
    ap.add_argument("--native-requests", type=int, default=20000, help="keep-alive requests per on-CPU time")
    ap.add_argument("--only-native", action="store_true", help="on-CPU times only, every stack twice, alternating")
    ap.add_argument("--json", help="write the numbers here too")
    a = ap.parse_args()
    want = a.stacks.split(",")
    unknown = set(want) - {s[0] for s in STACKS}
    if unknown:
        sys.exit(f"unknown stacks: {', '.join(sorted(unknown))}")
    stacks = [s for s in STACKS if s[0] in want]
    if not a.no_build:
        for key, _, features, env in stacks:
            build(key, features, env)
    workdir = tempfile.mkdtemp(prefix="tls-libs-")
    # bench.py's certificate: self-signed ECDSA P-256.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", f"{workdir}/key.pem", "-out", f"{workdir}/cert.pem",
                    "-days", "2", "-subj", "/CN=bench"], check=True, capture_output=True)
    results = {}
    if a.only_native:
        # Alternating rounds, the smaller of the two kept: other work on
        # the machine only ever adds time.
        for _ in range(2):
            for key, _, _, _ in stacks:
                r = native(key, workdir, a.native_conns, a.native_requests)
                log(f"{key}: " + ", ".join(f"{k} {v:,.1f}" for k, v in r.items()))
                old = results.setdefault(key, r)
                for k, v in r.items():
                    old[k] = min(old[k], v)
        print("\n".join(native_table(results)))
        return
    for key, _, _, _ in stacks:
        r = {}
        if key != "plain":
            r.update(handshakes(key, workdir, a.handshakes))
            r["resumes_stateless"] = resumes(key, workdir, "stateless")
            r["resumes_stateful"] = resumes(key, workdir, "stateful")
        r["keepalive"] = keepalive(key, workdir, a.requests)
        r["idle_kib"] = idle_memory(key, workdir, a.idle)
        r.update(native(key, workdir, a.native_conns, a.native_requests))
        results[key] = r
        log(f"{key}: " + ", ".join(f"{k} {v:,.2f}" for k, v in r.items()))
    print(table(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
