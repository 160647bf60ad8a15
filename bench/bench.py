#!/usr/bin/env python3
"""Side-by-side benchmark of frontend-proxy, HAProxy and nginx on loopback.

Started by bench/run.sh, which installs the tools and builds the proxy.
Standard library only; the chart needs matplotlib and is skipped without it.

One shared nginx backend (`return 200`, 50-byte body; a 64 KiB file; three
ports for round robin); for the gRPC scenario (k) a tonic server,
bench/grpc-backend. Each proxy runs with one worker pinned to CPU 1;
wrk (closed loop) and the backend share CPU 0. Runs of the different
targets alternate (A/B/A/B...) and the medians are reported. Latency under
a fixed request rate comes from oha (open loop, latency correction) when it
is installed. Every process started here is stopped before exit.
"""

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY = "frontend-proxy bench backend: 50 bytes of body".ljust(49, ".") + "\n"
assert len(BODY) == 50

PROXY_CPU = "1"
LOAD_CPU = "0"


@dataclass
class Scenario:
    key: str
    title: str
    short: str
    connections: int
    path: str = "/"
    close: bool = False
    backends: int = 1
    # "http" (plaintext HTTP/1.1), "tls" (HTTP/1.1 over TLS), "h2" (HTTP/2
    # over TLS, ALPN), "h2c" (HTTP/2 without TLS, prior knowledge).
    proto: str = "http"
    # The load generator: wrk (HTTP/1.1), h2load (HTTP/2), or `openssl
    # s_time` (a TLS handshake per request: "new" full, "reuse" resumed).
    tool: str = "wrk"
    streams: int = 1  # h2load: concurrent streams per connection
    # Unary gRPC calls (h2load POSTs GRPC_REQUEST) to the tonic backend
    # (bench/grpc-backend) instead of GETs to the nginx one.
    grpc: bool = False

    @property
    def tls(self):
        return self.proto in ("tls", "h2")


SCENARIOS = [
    Scenario("a", "small GET, 64 keep-alive connections", "(a) 64 conns", 64),
    Scenario("b", "small GET, 1000 keep-alive connections", "(b) 1000 conns", 1000),
    Scenario("c", "new connection per request (Connection: close), 64 clients", "(c) conn/request", 64, close=True),
    Scenario("d", "64 KiB responses, 64 keep-alive connections", "(d) 64 KiB", 64, path="/64k"),
    Scenario("e", "round robin over 3 backends, 64 keep-alive connections", "(e) 3 backends", 64, backends=3),
    Scenario("f", "TLS, HTTP/1.1, 64 keep-alive connections", "(f) TLS keep-alive", 64, proto="tls"),
    Scenario("g", "TLS, a new connection per request, full handshake (s_time -new), 16 clients",
             "(g) TLS full handshake", 16, proto="tls", tool="s_time:new"),
    Scenario("h", "TLS, a new connection per request, resumed session (s_time -reuse), 16 clients",
             "(h) TLS resumed", 16, proto="tls", tool="s_time:reuse"),
    Scenario("i", "HTTP/2 over TLS, 16 connections x 32 streams (h2load)", "(i) h2 TLS", 16, proto="h2",
             tool="h2load", streams=32),
    Scenario("j", "h2c (HTTP/2, prior knowledge), 16 connections x 32 streams (h2load)", "(j) h2c", 16,
             proto="h2c", tool="h2load", streams=32),
    Scenario("k", "gRPC unary over h2c to a gRPC (h2c) backend, 16 connections x 32 streams (h2load)",
             "(k) gRPC unary", 16, path="/bench.Echo/Unary", proto="h2c", tool="h2load", streams=32, grpc=True),
]
# The backend speaks plaintext HTTP/1.1: "direct" and the TCP relay only
# stand beside the proxies in plaintext HTTP/1.1 scenarios.
ALL_SCENARIOS = "".join(sc.key for sc in SCENARIOS)

# Scenario (k)'s request: one length-prefixed gRPC message (not compressed,
# 9 bytes), bench.Echo's `Msg { text: "bench", n: 1 }` in protobuf
# (field 1 string, field 2 varint); the backend echoes it.
GRPC_MESSAGE = b"\x0a\x05bench\x10\x01"
GRPC_REQUEST = b"\x00" + len(GRPC_MESSAGE).to_bytes(4, "big") + GRPC_MESSAGE


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


def http_get(port, path="/", tls=False):
    """One HTTP/1.1 request; returns the status code (a readiness check)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
        s = insecure_client_context().wrap_socket(raw, server_hostname="bench") if tls else raw
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(m.group(1)) if m else 0


def insecure_client_context():
    """A client context for the bench's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def h2_idle_request(tls):
    """The client's preface, an empty SETTINGS frame and one GET / on stream 1
    (HPACK: :method GET, :path /, :scheme from the static table, :authority
    a literal), all in one write."""
    block = b"\x82\x84" + (b"\x87" if tls else b"\x86") + b"\x41\x05bench"
    headers = len(block).to_bytes(3, "big") + b"\x01\x05" + (1).to_bytes(4, "big") + block
    return b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + headers


def h2_read_response(s):
    """Reads frames until stream 1 ends, acknowledging the server's SETTINGS;
    the response must be a 200 (HPACK's indexed `:status 200`)."""
    buf = b""
    status_ok = None
    while True:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed before its HTTP/2 response")
            buf += chunk
        size = int.from_bytes(buf[:3], "big")
        kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        payload, buf = buf[9:9 + size], buf[9 + size:]
        if kind == 4 and not flags & 1:
            s.sendall(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
        elif kind in (3, 7):
            raise RuntimeError(f"HTTP/2 {'RST_STREAM' if kind == 3 else 'GOAWAY'}: {payload.hex()}")
        elif kind == 1 and stream == 1 and status_ok is None:
            # Padding or priority would move the block; the proxies send neither.
            status_ok = payload[:1] == b"\x88"
            if not status_ok:
                raise RuntimeError(f"HTTP/2 response not a 200: {payload[:16].hex()}")
        if kind in (0, 1) and stream == 1 and flags & 1:
            return


def keepalive_requests(port, n, conns=4, path="/"):
    """`n` GETs spread over `conns` keep-alive connections, one at a time; each must be a 200."""
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\n\r\n".encode()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(conns)]
    try:
        for i in range(n):
            s = socks[i % conns]
            s.sendall(req)
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed before a response header")
                buf += chunk
            head, body = buf.split(b"\r\n\r\n", 1)
            m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if not head.startswith(b"HTTP/1.1 200") or not m:
                raise RuntimeError(f"unexpected response: {head[:200]!r}")
            while len(body) < int(m.group(1)):
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed inside a response body")
                body += chunk
    finally:
        for s in socks:
            s.close()


def tls_connections(port, n, resume, path="/"):
    """`n` TLS connections one after another, one GET each (Connection:
    close); with `resume`, each offers the session of the first. Returns how
    many handshakes were resumed."""
    ctx = insecure_client_context()
    session = None
    resumed = 0
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()
    for _ in range(n):
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        with ctx.wrap_socket(raw, server_hostname="bench", session=session if resume else None) as s:
            s.sendall(req)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            if not data.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected response: {data[:200]!r}")
            resumed += s.session_reused
            # A TLS 1.3 ticket arrives after the handshake: take it once the response is read.
            if resume and session is None:
                session = s.session
    return resumed


def pids_of(pid):
    """The process and its direct children (nginx master + workers)."""
    out = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def cpu_ticks(pids):
    """(utime, stime) of every thread of the given processes, in clock ticks."""
    user = system = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])  # field 14 of stat(5)
            system += int(fields[12])  # field 15
        except (OSError, IndexError, ValueError):
            pass
    return user, system


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_busy(seconds=1.0):
    """Share of both CPUs in use right now (all processes), from two /proc/stat samples.

    Unlike the load average, which still remembers the release build that
    bench/run.sh has just finished, this says whether something else is
    running while the benchmark starts or ends."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]  # idle + iowait
        return sum(v) - idle, sum(v)
    b0, t0 = sample()
    time.sleep(seconds)
    b1, t1 = sample()
    return (b1 - b0) / max(t1 - t0, 1)


def run(cmd, timeout):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def pinned(cpu, cmd):
    return (["taskset", "-c", cpu] if cpu else []) + cmd


# --------------------------------------------------------------------------- configs


def nginx_common(workdir, name):
    return f"""daemon off;
master_process on;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
worker_rlimit_nofile 19000;
{"user root;" if os.geteuid() == 0 else ""}
"""


def nginx_http_common(workdir, name):
    return f"""  access_log off;
  client_body_temp_path {workdir}/{name}-tmp/body;
  proxy_temp_path {workdir}/{name}-tmp/proxy;
  fastcgi_temp_path {workdir}/{name}-tmp/fastcgi;
  uwsgi_temp_path {workdir}/{name}-tmp/uwsgi;
  scgi_temp_path {workdir}/{name}-tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
"""


def backend_conf(workdir, ports):
    servers = "".join(
        f"""  server {{
    listen 127.0.0.1:{p} backlog=4096;
    location / {{ default_type text/plain; return 200 "{BODY.rstrip()}\\n"; }}
    location = /64k {{ default_type application/octet-stream; alias {workdir}/64k.bin; }}
  }}
"""
        for p in ports
    )
    return (
        nginx_common(workdir, "backend")
        + "worker_processes 1;\nevents { worker_connections 18000; }\nhttp {\n"
        + nginx_http_common(workdir, "backend")
        + "  sendfile on;\n"
        + servers
        + "}\n"
    )


def nginx_listen(workdir, port, proto):
    """nginx's `listen` (and certificate) for a scenario's protocol; nginx's
    TLS defaults otherwise (session tickets on, no session cache)."""
    flags = {"http": "", "tls": " ssl", "h2": " ssl http2", "h2c": " http2"}[proto]
    out = f"    listen 127.0.0.1:{port}{flags} backlog=4096;\n"
    if proto in ("tls", "h2"):
        out += f"    ssl_certificate {workdir}/cert.pem;\n    ssl_certificate_key {workdir}/key.pem;\n"
        # Debian 12's nginx 1.22 offers at most TLS 1.2 by default (1.23.4
        # added TLS 1.3 to the default); without this line nginx alone
        # negotiated TLS 1.2, whose resumed handshakes skip the key exchange
        # TLS 1.3's (psk_dhe_ke) make.
        out += "    ssl_protocols TLSv1.2 TLSv1.3;\n"
    return out


def nginx_proxy_conf(workdir, port, backends, workers, proto="http", grpc=False):
    upstream = "".join(f"    server 127.0.0.1:{p};\n" for p in backends)
    # gRPC: nginx's grpc module, HTTP/2 to the backend over reused connections.
    location = """      grpc_pass grpc://backend;
""" if grpc else """      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_max_temp_file_size 0;
"""
    return (
        nginx_common(workdir, "nginx")
        + f"worker_processes {workers};\nevents {{ worker_connections 18000; }}\nhttp {{\n"
        + nginx_http_common(workdir, "nginx")
        + f"""  upstream backend {{
{upstream}    keepalive 1024;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }}
  server {{
{nginx_listen(workdir, port, proto)}    location / {{
{location}    }}
  }}
}}
"""
    )


def haproxy_conf(port, backends, threads, relay=False, proto="http", workdir=None, grpc=False):
    """HAProxy as an HTTP proxy or, with `relay`, as a TCP relay: each client
    connection gets its own backend connection and bytes pass unread. The
    relay makes the same four system calls per keep-alive request as the
    HTTP proxies with almost no user-space work, so its req/s are what any
    proxy could reach on this machine."""
    # gRPC: HTTP/2 (h2c) to the backend too.
    server_proto = " proto h2" if grpc else ""
    servers = "".join(f"  server b{i} 127.0.0.1:{p}{server_proto}\n" for i, p in enumerate(backends))
    # HAProxy's TLS defaults otherwise (tickets on, a 20000-session cache).
    bind = {"http": "", "tls": f" ssl crt {workdir}/combined.pem alpn http/1.1",
            "h2": f" ssl crt {workdir}/combined.pem alpn h2,http/1.1", "h2c": " proto h2"}[proto]
    http = """  timeout http-keep-alive 60s
  # Reuse idle server connections for a session's first request too, as
  # nginx's upstream keepalive and Pingora's pool do.
  http-reuse always
"""
    return f"""global
  nbthread {threads}
  maxconn 9000
defaults
  mode {"tcp" if relay else "http"}
  timeout connect 5s
  timeout client 60s
  timeout server 60s
{"" if relay else http}frontend fe
  bind 127.0.0.1:{port} backlog 4096{bind}
  default_backend be
backend be
  balance roundrobin
{servers}"""


def frontend_proxy_conf(port, backends, proto="http", workdir=None, grpc=False):
    """The bench's Envoy bootstrap; TLS as Envoy's defaults would have it
    apart from the certificate and ALPN (codec_type AUTO serves h2c too).
    gRPC: the cluster speaks HTTP/2 (h2c) upstream, as Envoy's gRPC
    clusters are configured."""
    h2_upstream = """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}""" if grpc else ""
    tls = ""
    if proto in ("tls", "h2"):
        alpn = '["h2", "http/1.1"]' if proto == "h2" else '["http/1.1"]'
        tls = f"""
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: {alpn}
            tls_certificates:
            - certificate_chain: {{ filename: {workdir}/cert.pem }}
              private_key: {{ filename: {workdir}/key.pem }}"""
    eps = "".join(
        f"""
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {p} }}"""
        for p in backends
    )
    return f"""static_resources:
  listeners:
  - name: bench
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    filter_chains:
    - {tls.lstrip() + chr(10) + "      " if tls else ""}filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            name: bench
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: backend }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    connect_timeout: 1s
    type: STATIC
    lb_policy: ROUND_ROBIN{h2_upstream}
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:{eps}
"""


# --------------------------------------------------------------------------- processes


class Proc:
    """A server process started (and always stopped) by the harness."""

    def __init__(self, name, cmd, port, workdir, cpu, serving=None, proto="http"):
        self.name = name
        self.port = port
        self.cmd = pinned(cpu, cmd)
        self.log = open(os.path.join(workdir, f"{name}.out"), "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.serving = serving  # "children" when the workers are child processes
        self.proto = proto

    def ready(self, path="/", startup=10.0):
        wait_port(self.port, self.proc, startup)
        deadline = time.time() + startup
        while time.time() < deadline:
            try:
                if self.status(path) == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} does not answer 200 on {path}")

    def status(self, path):
        if self.proto == "h2c":
            # nginx's `listen ... http2` and HAProxy's `proto h2` speak only HTTP/2 there.
            out = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge",
                       f"http://127.0.0.1:{self.port}{path}"], timeout=5)
            return int(out.stdout or 0)
        return http_get(self.port, path, tls=self.proto in ("tls", "h2"))

    def pids(self):
        return pids_of(self.proc.pid)

    def serving_pids(self):
        pids = self.pids()
        return pids[1:] if self.serving == "children" and len(pids) > 1 else pids[:1]

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.log.close()


@dataclass
class Target:
    name: str
    port: int
    proc: object = None  # Proc or None for the direct baseline


@dataclass
class RunResult:
    rps: float
    p50_us: float
    p99_us: float
    cpu_s: float = 0.0
    cpu_per_100k: float = 0.0
    user_us: float = 0.0  # user-space CPU per request
    kernel_us: float = 0.0  # system-call / TCP CPU per request
    cpu_util: float = 0.0
    errors: int = 0
    requests: int = 0
    resumed: float = float("nan")  # s_time -reuse: share of resumed handshakes


@dataclass
class Cell:
    runs: list = field(default_factory=list)
    peak_rss_kb: int = 0
    pss_kb: int = 0

    def median(self, attr):
        vals = [getattr(r, attr) for r in self.runs]
        return statistics.median(vals) if vals else float("nan")


class Bench:
    def __init__(self, args):
        self.args = args
        self.workdir = tempfile.mkdtemp(prefix="fp-bench-")
        self.procs = []
        self.commands = {}
        self.lua = os.path.join(HERE, "report.lua")
        with open(os.path.join(self.workdir, "64k.bin"), "wb") as f:
            f.write(b"x" * 65536)
        for name in ("backend", "nginx"):
            for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
                os.makedirs(os.path.join(self.workdir, f"{name}-tmp", sub), exist_ok=True)
        os.chmod(self.workdir, 0o755)
        # A self-signed ECDSA P-256 certificate for the TLS scenarios, as the
        # issue's measurements used; HAProxy wants certificate and key in one file.
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", f"{self.workdir}/key.pem", "-out", f"{self.workdir}/cert.pem",
                        "-days", "2", "-subj", "/CN=bench"], check=True, capture_output=True)
        with open(f"{self.workdir}/combined.pem", "w") as out:
            for part in ("cert.pem", "key.pem"):
                with open(f"{self.workdir}/{part}") as f:
                    out.write(f.read())

    def start(self, name, cmd, port, cpu, serving=None, path="/", startup=10.0, proto="http"):
        p = Proc(name, cmd, port, self.workdir, cpu, serving, proto)
        self.procs.append(p)
        if not name.startswith("callgrind:"):
            self.commands.setdefault(name.split("#")[0], " ".join(p.cmd))
        return p.ready(path, startup)

    def stop(self, p):
        p.stop()
        self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            p.stop()
        self.procs.clear()

    def write(self, name, text):
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    # -- servers

    def start_backend(self):
        self.backend_ports = [free_port() for _ in range(3)]
        conf = self.write("backend.conf", backend_conf(self.workdir, self.backend_ports))
        self.backend = self.start("backend", ["nginx", "-p", self.workdir, "-c", conf, "-e", f"{self.workdir}/backend-error.log"],
                                  self.backend_ports[0], LOAD_CPU, serving="children")
        for p in self.backend_ports:
            wait_port(p, self.backend.proc)
        if self.args.grpc_backend and any(sc.grpc for sc in SCENARIOS if sc.key in self.args.scenarios):
            self.start_grpc_backend()

    def start_grpc_backend(self):
        """bench/grpc-backend (tonic, one thread) on CPU 0 beside the nginx backend."""
        self.grpc_port, self.grpc_stats_port = free_port(), free_port()
        p = Proc("grpc-backend", [self.args.grpc_backend, str(self.grpc_port), str(self.grpc_stats_port)],
                 self.grpc_port, self.workdir, LOAD_CPU)
        self.procs.append(p)
        self.commands["grpc-backend"] = " ".join(p.cmd)
        wait_port(self.grpc_port, p.proc)
        wait_port(self.grpc_stats_port, p.proc)

    def grpc_counts(self, settle=3.0):
        """(calls answered with grpc-status 0, calls answered otherwise) by
        the gRPC backend so far, once they stop moving: calls in flight when
        h2load stops still end (answered, or failed as the proxy resets
        them) after it has exited, and belong to its run."""
        def read():
            with socket.create_connection(("127.0.0.1", self.grpc_stats_port), timeout=5) as s:
                line = s.makefile().readline()
            m = re.fullmatch(r"ok (\d+) failed (\d+)\n", line)
            if not m:
                raise RuntimeError(f"grpc-backend stats: {line!r}")
            return int(m.group(1)), int(m.group(2))
        last, deadline = read(), time.time() + settle
        while time.time() < deadline:
            time.sleep(0.1)
            now = read()
            if now == last:
                break
            last = now
        return last

    def start_proxies(self, scenario, workers, cpu, which, prefix=()):
        backends = [self.grpc_port] if scenario.grpc else self.backend_ports[: scenario.backends]
        tag = f"{scenario.key}{workers}"
        proto = scenario.proto
        targets = []
        for name in which:
            port = free_port()
            if name == "direct":
                targets.append(Target("direct", self.backend_ports[0]))
                continue
            if name == "haproxy":
                conf = self.write(f"haproxy-{tag}.cfg", haproxy_conf(port, backends, workers, proto=proto,
                                                                         workdir=self.workdir, grpc=scenario.grpc))
                cmd = ["haproxy", "-db", "-f", conf]
                serving = None
            elif name == "relay":
                conf = self.write(f"relay-{tag}.cfg", haproxy_conf(port, backends, 1, relay=True))
                cmd = ["haproxy", "-db", "-f", conf]
                serving = None
            elif name == "nginx":
                conf = self.write(f"nginx-{tag}.conf", nginx_proxy_conf(self.workdir, port, backends, workers, proto,
                                                                        scenario.grpc))
                cmd = ["nginx", "-p", self.workdir, "-c", conf, "-e", f"{self.workdir}/nginx-error.log"]
                serving = "children"
            else:  # frontend-proxy, or a named variant binary
                binary, *extra = self.args.binaries[name].split()
                conf = self.write(f"{name}-{tag}.yaml", frontend_proxy_conf(port, backends, proto, self.workdir,
                                                                              scenario.grpc))
                # As shipped: the default log level (info) and no `access_log` in
                # the config, so no per-request line; a variant may add flags.
                cmd = [binary, "-c", conf, "--concurrency", str(workers), *extra]
                serving = None
            label = f"callgrind:{name}#{tag}" if prefix else f"{name}#{tag}"
            proc = self.start(label, list(prefix) + cmd, port, cpu, serving=serving, path=scenario.path,
                              startup=60.0 if prefix else 10.0, proto=scenario.proto)
            targets.append(Target(name, port, proc))
        return targets

    # -- load

    def wrk(self, target, scenario, duration, cpu=LOAD_CPU, warmup=False):
        cmd = ["wrk", "-t1", f"-c{scenario.connections}", f"-d{duration}s", "--timeout", "5s", "-s", self.lua]
        if scenario.close:
            cmd += ["-H", "Connection: close"]
        cmd.append(f"{'https' if scenario.tls else 'http'}://127.0.0.1:{target.port}{scenario.path}")
        cmd = pinned(cpu, cmd)
        # The report gives a measured run's command, not a warm-up's (the
        # latency section warms up with scenario (a) after its measured runs).
        if not warmup:
            label = f"wrk ({scenario.key})" if cpu else f"wrk ({scenario.key}, as deployed)"
            self.commands[label] = " ".join(cmd).replace(str(target.port), "PORT")
        pids = target.proc.pids() if target.proc else []
        before = cpu_ticks(pids)
        t0 = time.time()
        out = run(cmd, timeout=duration + 30)
        wall = time.time() - t0
        after = cpu_ticks(pids)
        m = re.search(r"WRKJSON (\{.*\})", out.stdout)
        if not m:
            raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
        j = json.loads(m.group(1))
        errors = j["connect_errors"] + j["read_errors"] + j["write_errors"] + j["status_errors"] + j["timeouts"]
        # Connection: close makes wrk count the server's close as a read error
        # on some runs; only status errors and timeouts are failures there.
        if scenario.close:
            errors = j["status_errors"] + j["timeouts"] + j["connect_errors"]
        ok = max(j["requests"] - j["status_errors"], 0)
        secs = j["duration_us"] / 1e6
        user_s = (after[0] - before[0]) / CLK_TCK
        kernel_s = (after[1] - before[1]) / CLK_TCK
        cpu_s = user_s + kernel_s
        return RunResult(
            rps=ok / secs,
            p50_us=j["p50_us"],
            p99_us=j["p99_us"],
            cpu_s=cpu_s,
            cpu_per_100k=cpu_s / ok * 1e5 if ok and pids else 0.0,
            cpu_util=cpu_s / wall if pids else 0.0,
            user_us=user_s / ok * 1e6 if ok and pids else 0.0,
            kernel_us=kernel_s / ok * 1e6 if ok and pids else 0.0,
            errors=errors,
            requests=j["requests"],
        )

    def load(self, target, scenario, duration, cpu=LOAD_CPU, warmup=False):
        """One measured run of the scenario's load generator against a target."""
        if scenario.tool == "h2load":
            return self.h2load(target, scenario, duration, cpu, warmup)
        if scenario.tool.startswith("s_time"):
            return self.s_time(target, scenario, duration, cpu, warmup)
        return self.wrk(target, scenario, duration, cpu, warmup)

    def measured(self, target, cmds, timeout, label, warmup):
        """Runs the commands side by side; their outputs, the wall time and
        the target's (user, kernel) CPU seconds over it."""
        if not warmup:
            self.commands[label] = " ".join(cmds[0]).replace(str(target.port), "PORT") + (
                f"  (x{len(cmds)} side by side)" if len(cmds) > 1 else "")
        pids = target.proc.pids() if target.proc else []
        before = cpu_ticks(pids)
        t0 = time.time()
        procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in cmds]
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
        wall = time.time() - t0
        after = cpu_ticks(pids)
        return outs, wall, (after[0] - before[0]) / CLK_TCK, (after[1] - before[1]) / CLK_TCK, bool(pids)

    @staticmethod
    def result(ok, secs, wall, user_s, kernel_s, has_pids, errors, requests, p50_us=float("nan"),
               p99_us=float("nan")):
        cpu_s = user_s + kernel_s
        return RunResult(
            rps=ok / secs if secs else 0.0, p50_us=p50_us, p99_us=p99_us, cpu_s=cpu_s,
            cpu_per_100k=cpu_s / ok * 1e5 if ok and has_pids else 0.0,
            cpu_util=cpu_s / wall if has_pids else 0.0,
            user_us=user_s / ok * 1e6 if ok and has_pids else 0.0,
            kernel_us=kernel_s / ok * 1e6 if ok and has_pids else 0.0,
            errors=errors, requests=requests)

    def h2load(self, target, scenario, duration, cpu=LOAD_CPU, warmup=False):
        """HTTP/2: h2load, one thread, `connections` x `streams` concurrent
        requests; h2 over TLS negotiates ALPN, h2c uses prior knowledge.
        gRPC: each request POSTs GRPC_REQUEST, and a response counts only
        as far as the backend answered as many calls with grpc-status 0
        (a gRPC error is an HTTP 200 too, and the proxies' own gRPC
        answers never reach the backend)."""
        scheme = "https" if scenario.tls else "http"
        grpc = []
        if scenario.grpc:
            body = os.path.join(self.workdir, "grpc-request.bin")
            with open(body, "wb") as f:
                f.write(GRPC_REQUEST)
            grpc = ["-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers"]
            calls_before = self.grpc_counts()
        cmd = pinned(cpu, ["h2load", "-t1", f"-c{scenario.connections}", f"-m{scenario.streams}",
                           f"-D{duration}", *grpc, f"{scheme}://127.0.0.1:{target.port}{scenario.path}"])
        outs, wall, user_s, kernel_s, has_pids = self.measured(
            target, [cmd], duration + 30, f"h2load ({scenario.key})", warmup)
        out = outs[0]
        fin = re.search(r"finished in ([\d.]+)(m?s)", out)
        req = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
                        r"(\d+) errored, (\d+) timeout", out)
        codes = re.search(r"status codes: (\d+) 2xx", out)
        if not (fin and req and codes):
            raise RuntimeError(f"h2load failed: {out[-2000:]}")
        secs = float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1)
        # h2load may count the status of a response whose stream did not
        # finish before -D ran out: a success is a 2xx that also succeeded.
        ok = min(int(codes.group(1)), int(req.group(2)))
        total = int(req.group(1))
        errors = int(req.group(3)) + int(req.group(4)) + int(req.group(5)) + (int(req.group(2)) - ok)
        if scenario.grpc:
            # Every call h2load saw succeed must be one the backend answered
            # with grpc-status 0 (a proxy's own gRPC answer is a 200 too).
            # The backend also ends the calls h2load left in flight when it
            # stopped (started - done): answered, or failed when the proxy
            # reset them half sent. A failure the client saw (h2load's
            # errors) or that passed as a 2xx (short) is counted once.
            calls_after = self.grpc_counts()
            grpc_ok, grpc_failed = (calls_after[0] - calls_before[0], calls_after[1] - calls_before[1])
            flight = re.search(r"(\d+) started, (\d+) done", out)
            abandoned = int(flight.group(1)) - int(flight.group(2))
            short = max(ok - grpc_ok, 0)
            errors += short + max(grpc_failed - abandoned - short - errors, 0)
            ok -= short
        return self.result(ok, secs, wall, user_s, kernel_s, has_pids, errors, total)

    def s_time(self, target, scenario, duration, cpu=LOAD_CPU, warmup=False):
        """A TLS handshake per request: `connections` `openssl s_time`
        processes side by side, each connecting, sending a GET,
        reading the response and closing, over and over; `-new` makes every
        handshake a full one, `-reuse` offers the first connection's session
        (a TLS 1.3 ticket) on every later one. s_time prints `r` for each
        resumed handshake: a resumption rate below 100 % in (h) means the
        proxy did full handshakes there."""
        mode = scenario.tool.split(":")[1]
        # s_time writes `GET <path> HTTP/1.0` with no Host, which
        # frontend-proxy refuses (426, as Envoy without accept_http_10)
        # where nginx and HAProxy answer: the
        # path carries the rest of an HTTP/1.1 head, and s_time's own
        # ` HTTP/1.0` ends up in the value of an X-Bench field nobody reads.
        www = f"{scenario.path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nX-Bench: s_time"
        cmd = pinned(cpu, ["openssl", "s_time", "-connect", f"127.0.0.1:{target.port}", f"-{mode}",
                           "-time", str(duration), "-www", www])
        outs, wall, user_s, kernel_s, has_pids = self.measured(
            target, [cmd] * scenario.connections, duration + 30, f"s_time ({scenario.key})", warmup)
        ok = resumed = 0
        errors = 0
        for out in outs:
            m = re.search(r"(\d+) connections in [\d.]+s; [\d.]+ connections/user sec, bytes read (\d+)", out)
            if not m:
                errors += 1
                continue
            n, read = int(m.group(1)), int(m.group(2))
            # Every connection must have read a whole response (head + 50-byte body).
            if n and read / n < len(BODY) + 40:
                errors += n
                continue
            ok += n
            if mode == "reuse":
                marks = "".join(line for line in out.splitlines() if re.fullmatch(r"[r*tT0-9]+", line or "-"))
                resumed += marks.count("r")
        res = self.result(ok, wall, wall, user_s, kernel_s, has_pids, errors, ok)
        res.resumed = resumed / ok if ok and mode == "reuse" else float("nan")
        return res

    def oha(self, target, rate, duration, connections=64):
        cmd = pinned(LOAD_CPU, [self.args.oha, "--no-tui", "--output-format", "json", "-z", f"{duration}s",
                                "-q", str(rate), "--latency-correction", "-c", str(connections),
                                f"http://127.0.0.1:{target.port}/"])
        self.commands["oha"] = " ".join(cmd).replace(str(target.port), "PORT")
        out = run(cmd, timeout=duration + 30)
        try:
            j = json.loads(out.stdout)
        except json.JSONDecodeError as e:
            raise RuntimeError(f"oha failed: {out.stdout[:500]}\n{out.stderr[:500]}") from e
        pct = j.get("latencyPercentiles", {})
        summary = j.get("summary", {})
        codes = j.get("statusCodeDistribution", {})
        ok = sum(v for k, v in codes.items() if k.startswith("2"))
        total = sum(codes.values())
        return {
            "p50_us": pct.get("p50", float("nan")) * 1e6,
            "p99_us": pct.get("p99", float("nan")) * 1e6,
            "p999_us": pct.get("p99.9", float("nan")) * 1e6,
            "rps": summary.get("requestsPerSec", 0.0),
            # Requests still in flight when -z ends are "aborted due to deadline": not failures.
            "errors": (total - ok) + sum(v for k, v in j.get("errorDistribution", {}).items() if "deadline" not in k),
        }

    # -- scenarios

    def order(self, names, r):
        k = r % len(names)
        return names[k:] + names[:k]

    def throughput(self, scenario, names, workers=1, cpu=PROXY_CPU, load_cpu=LOAD_CPU):
        a = self.args
        targets = self.start_proxies(scenario, workers, cpu, names)
        cells = {t.name: Cell() for t in targets}
        try:
            for t in targets:
                self.load(t, scenario, a.warmup, cpu=load_cpu, warmup=True)
            for r in range(a.rounds):
                for t in self.order(targets, r):
                    res = self.load(t, scenario, a.duration, cpu=load_cpu)
                    cells[t.name].runs.append(res)
                    resumed = "" if res.resumed != res.resumed else f"  resumed {res.resumed * 100:.0f}%"
                    log(f"  {scenario.key} w{workers} {t.name:<16} {res.rps:9.0f} req/s  p99 {res.p99_us / 1000:7.2f} ms"
                        f"  cpu {res.cpu_util * 100:5.1f}%  {res.cpu_per_100k:6.2f} s/100k  err {res.errors}{resumed}")
            for t in targets:
                if t.proc:
                    pids = t.proc.serving_pids()
                    cells[t.name].peak_rss_kb = max(status_kb(p, "VmHWM") for p in pids)
                    cells[t.name].pss_kb = pss_kb(t.proc.pids())
        finally:
            for t in targets:
                if t.proc:
                    self.stop(t.proc)
        return cells

    def latency(self, names):
        a = self.args
        sc = SCENARIOS[0]
        targets = self.start_proxies(sc, 1, PROXY_CPU, names)
        out = {t.name: [] for t in targets}
        try:
            for t in targets:
                self.wrk(t, sc, a.warmup, warmup=True)
            for r in range(a.latency_rounds):
                for t in self.order(targets, r):
                    res = self.oha(t, a.rate, a.latency_duration)
                    out[t.name].append(res)
                    log(f"  latency @{a.rate}/s {t.name:<16} p50 {res['p50_us']:.0f} us  p99 {res['p99_us']:.0f} us"
                        f"  achieved {res['rps']:.0f}/s  errors {res['errors']}")
        finally:
            for t in targets:
                if t.proc:
                    self.stop(t.proc)
        return {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in out.items()}

    # Idle connections opened (each sending its request) before their
    # responses are read. All at once, a proxy opens an upstream connection
    # for each request that overlaps another and may pool them, a number
    # that moves from run to run and would be counted as the idle client
    # connections' memory (bench/RESULTS.md).
    IDLE_BATCH = 50

    def idle_memory(self, names, n, proto="http"):
        """Resident memory each idle keep-alive connection costs a proxy (KiB).

        `n` connections each get one response and then stay open; the serving
        process's VmRSS (nginx: its worker) is read before and after, once
        50 connections have warmed up the allocator and the upstream pool.
        `proto`: "http" (scenario a's set-up), "tls" (f), "h2" (HTTP/2 over
        TLS, i) or "h2c" (j); an HTTP/2 connection has had one stream."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = n + 1000
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        n = min(n, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 1000)
        h2 = proto in ("h2", "h2c")
        req = h2_idle_request(proto == "h2") if h2 else b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"

        ctx = insecure_client_context() if proto in ("tls", "h2") else None
        if ctx and h2:
            ctx.set_alpn_protocols(["h2"])

        def open_served(port, count):
            """`count` connections, each served once, a batch at a time."""
            socks = []
            for start in range(0, count, self.IDLE_BATCH):
                socks += open_batch(port, min(self.IDLE_BATCH, count - start))
            return socks

        def open_batch(port, count):
            socks = []
            for _ in range(count):
                s = socket.create_connection(("127.0.0.1", port), timeout=30)
                if ctx:
                    s = ctx.wrap_socket(s, server_hostname="bench")
                s.sendall(req)
                socks.append(s)
            for s in socks:
                if h2:
                    h2_read_response(s)
                    continue
                got = b""
                while not (b"\r\n\r\n" in got and got.endswith(BODY.encode())):
                    chunk = s.recv(4096)
                    if not chunk:
                        raise RuntimeError("connection closed before its response")
                    got += chunk
            return socks

        out = {}
        key = {"http": "a", "tls": "f", "h2": "i", "h2c": "j"}[proto]
        sc = next(s for s in SCENARIOS if s.key == key)
        for name in [x for x in names if x != "direct"]:
            (t,) = self.start_proxies(sc, 1, PROXY_CPU, [name])
            socks = []
            try:
                pid = t.proc.serving_pids()[0]
                socks += open_served(t.port, 50)
                before = status_kb(pid, "VmRSS")
                socks += open_served(t.port, n)
                # Idle: longer than frontend-proxy's RELEASE_AFTER (1 s,
                # proxy/h2.rs), after which an HTTP/2 connection gives back
                # what h2 keeps for streams, and than a quiet worker takes
                # to give freed memory back to the system (a collection a
                # second, mimalloc's 1 s purge delay; listen/allocator.rs).
                # HAProxy and nginx read the same after 1.5 s or 5.
                time.sleep(5)
                out[name] = (status_kb(pid, "VmRSS") - before) / n
                log(f"  idle memory ({proto}) {name:<16} {out[name]:6.1f} KiB per connection ({n} connections)")
            finally:
                for s in socks:
                    s.close()
                self.stop(t.proc)
        self.commands["idle memory"] = (f"{n} connections, one GET each, {self.IDLE_BATCH} at a time, then idle for 5 s;"
                                        " VmRSS of the serving process before and after")
        return out, n

    def callgrind(self, name, scenario, work):
        """User-space instructions `name` executes for `work(port)`: the
        proxy runs under callgrind (all threads; nginx: every process), the
        counters are zeroed before and dumped after."""
        cg = os.path.join(self.workdir, f"callgrind-{name}.out")
        prefix = ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={cg}.%p"]
        (t,) = self.start_proxies(scenario, 1, None, [name], prefix=prefix)
        try:
            work(t.port, warmup=True)
            pids = [str(p) for p in t.proc.pids()]
            run(["callgrind_control", "--zero"] + pids, timeout=60)
            for f in os.listdir(self.workdir):
                if f.startswith(f"callgrind-{name}.out"):
                    os.remove(os.path.join(self.workdir, f))
            extra = work(t.port, warmup=False)
            run(["callgrind_control", "--dump"] + pids, timeout=60)
            total = 0
            for f in os.listdir(self.workdir):
                if f.startswith(f"callgrind-{name}.out"):
                    with open(os.path.join(self.workdir, f)) as fh:
                        total += next((int(line.split()[1]) for line in fh
                                       if line.startswith(("summary:", "totals:"))), 0)
            if not total:
                raise RuntimeError(f"callgrind wrote no counts for {name} in {self.workdir}")
            return total, extra
        finally:
            self.stop(t.proc)

    def tls_instructions(self, names, n=200):
        """Instructions per TLS connection (handshake + one GET + close),
        full and resumed handshakes separately, TLS 1.3 with the bench's
        ECDSA P-256 certificate."""
        sc = next(s for s in SCENARIOS if s.key == "f")
        out = {}
        for name in [x for x in names if x != "direct"]:
            row = {}
            for mode in ("full", "resumed"):
                def work(port, warmup, mode=mode):
                    return tls_connections(port, 20 if warmup else n, resume=mode == "resumed")
                total, resumed = self.callgrind(name, sc, work)
                row[mode] = total / n
                if mode == "resumed":
                    row["resumed_share"] = resumed / n
            out[name] = row
            log(f"  TLS instructions {name:<16} full {row['full']:9.0f}  resumed {row['resumed']:9.0f}"
                f" ({row['resumed_share'] * 100:.0f} % resumed)")
        self.commands["callgrind TLS"] = (f"{n} TLS connections one after another, one GET each (Python ssl), full"
                                          " handshakes, then the same offering the first session (resumed)")
        return out

    def instructions(self, names, n=2000):
        """User-space instructions per request under callgrind: a count that machine noise does not move.

        Each proxy runs under `valgrind --tool=callgrind` (all threads and, for
        nginx, the worker process); after 200 warm-up requests the counters are
        zeroed, `n` requests go over 4 keep-alive connections one at a time, and
        the dumped totals are divided by `n`. The kernel's share (system calls,
        TCP) is not in it."""
        sc = SCENARIOS[0]
        out = {}
        for name in [x for x in names if x != "direct"]:
            cg = os.path.join(self.workdir, f"callgrind-{name}.out")
            prefix = ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={cg}.%p"]
            (t,) = self.start_proxies(sc, 1, None, [name], prefix=prefix)
            try:
                keepalive_requests(t.port, 200)
                pids = [str(p) for p in t.proc.pids()]
                run(["callgrind_control", "--zero"] + pids, timeout=60)
                for f in os.listdir(self.workdir):
                    if f.startswith(f"callgrind-{name}.out"):
                        os.remove(os.path.join(self.workdir, f))
                keepalive_requests(t.port, n)
                run(["callgrind_control", "--dump"] + pids, timeout=60)
                total = 0
                for f in os.listdir(self.workdir):
                    if f.startswith(f"callgrind-{name}.out"):
                        with open(os.path.join(self.workdir, f)) as fh:
                            total += next((int(line.split()[1]) for line in fh
                                           if line.startswith(("summary:", "totals:"))), 0)
                if not total:
                    raise RuntimeError(f"callgrind wrote no counts for {name} in {self.workdir}")
                out[name] = total / n
                log(f"  instructions {name:<16} {out[name]:9.0f} per request")
            finally:
                self.stop(t.proc)
        self.commands["callgrind"] = (" ".join(prefix[:3]) + " PROXY; callgrind_control --zero / --dump around"
                                      f" {n} GETs on 4 keep-alive connections")
        return out


# --------------------------------------------------------------------------- report


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "not found"


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    debian = ""
    try:
        with open("/etc/debian_version") as f:
            debian = "Debian " + f.read().strip()
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} vCPU {model}, {mem:.0f} GiB RAM, {debian}, Linux {platform.release()}"


def git_rev():
    out = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "frontend-proxy/src"],
                           capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + (" (+ uncommitted changes in frontend-proxy/src)" if dirty else "")


def fmt_ratio(a, b):
    return f"{a / b:.2f}" if a and b else "–"


def results_table(cells, names, primary):
    lines = ["| proxy | req/s (median) | runs | p50 ms | p99 ms | proxy core busy | CPU s / 100k req | user / kernel µs per req | peak RSS MB | PSS MB | fp/HAProxy | fp/nginx | errors |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fp = cells.get(primary)
    for n in names:
        if n not in cells:
            continue
        c = cells[n]
        runs = "/".join(f"{r.rps / 1000:.1f}k" for r in c.runs)
        rss = f"{c.peak_rss_kb / 1024:.1f}" if c.peak_rss_kb else "–"
        pss = f"{c.pss_kb / 1024:.1f}" if c.pss_kb else "–"
        cpu = f"{c.median('cpu_per_100k'):.2f}" if c.peak_rss_kb else "–"
        util = f"{c.median('cpu_util') * 100:.0f} %" if c.peak_rss_kb else "–"
        split = f"{c.median('user_us'):.1f} / {c.median('kernel_us'):.1f}" if c.peak_rss_kb else "–"
        ratio_h = ratio_n = ""
        if n == primary and fp:
            ratio_h = fmt_ratio(fp.median("rps"), cells["haproxy"].median("rps")) if "haproxy" in cells else "–"
            ratio_n = fmt_ratio(fp.median("rps"), cells["nginx"].median("rps")) if "nginx" in cells else "–"
        errors = sum(r.errors for r in c.runs)
        # h2load and s_time give no percentiles; s_time -reuse gives the resumption rate.
        ms = lambda v: "–" if v != v else f"{v / 1000:.2f}"  # noqa: E731
        label = n
        if c.runs and c.median("resumed") == c.median("resumed"):
            label = f"{n} ({c.median('resumed') * 100:.0f} % resumed)"
        lines.append(f"| {label} | {c.median('rps'):,.0f} | {runs} | {ms(c.median('p50_us'))} | "
                     f"{ms(c.median('p99_us'))} | {util} | {cpu} | {split} | {rss} | {pss} | {ratio_h} | {ratio_n} | {errors} |")
    return "\n".join(lines)


def paired(cells, a, b, attr="rps"):
    """Ratios of a's `attr` (req/s, or CPU s per 100k) over b's, round by
    round. The runs of one round are seconds apart, so a ratio within a
    round cancels the machine's slower drift, which a ratio of medians over
    the whole cell does not."""
    if a not in cells or b not in cells:
        return []
    return [getattr(x, attr) / getattr(y, attr) for x, y in zip(cells[a].runs, cells[b].runs) if getattr(y, attr)]


def paired_cell(ratios, lower_is_better=False):
    if not ratios:
        return "–"
    if lower_is_better:
        better, word = sum(1 for r in ratios if r <= 1), "less"
    else:
        better, word = sum(1 for r in ratios if r >= 1), "ahead"
    return (f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f};"
            f" {word} in {better} of {len(ratios)})")


def summary_table(results, sections, names, primary, attr="rps"):
    """One row per scenario: the primary over each other target, round by
    round, in req/s or (attr="cpu_per_100k") in CPU per request."""
    rest = [n for n in names if n not in (primary, "direct")]
    cpu = attr == "cpu_per_100k"
    head = "median (range; rounds with less)" if cpu else "median (range; rounds ahead)"
    lines = ["| scenario |" + "".join(f" {primary}/{n}: {head} |" for n in rest),
             "|---|" + "---|" * len(rest)]
    for key, _ in sections:
        if key in results:
            label = key.split(":", 1)[1]
            lines.append(f"| {label} |" + "".join(
                f" {paired_cell(paired(results[key], primary, n, attr), lower_is_better=cpu)} |" for n in rest))
    return "\n".join(lines)


def chart(results, names, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no chart")
        return False
    keys = [k for k in results if k.startswith("pinned:")]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(names)
    colors = {"direct": "#999999", "frontend-proxy": "#d62728", "haproxy": "#1f77b4", "nginx": "#2ca02c"}
    for i, n in enumerate(names):
        xs = [j + i * width for j in range(len(keys))]
        rps = [results[k][n].median("rps") / 1000 if n in results[k] else 0 for k in keys]
        cpu = [results[k][n].median("cpu_per_100k") if n in results[k] and n != "direct" else 0 for k in keys]
        color = colors.get(n)
        axes[0].bar(xs, rps, width, label=n, color=color)
        if n != "direct":
            axes[1].bar(xs, cpu, width, label=n, color=color)
    labels = [k.split(":", 1)[1] for k in keys]
    for ax, title in ((axes[0], "throughput, 1 worker on 1 core (k req/s, higher is better)"),
                      (axes[1], "proxy CPU seconds per 100k requests (lower is better)")):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_report(b, results, lat, instr, idle, names, meta, path):
    a = b.args
    primary = "frontend-proxy" if "frontend-proxy" in names else names[-1]
    out = [
        "# Benchmark results: frontend-proxy vs HAProxy vs nginx",
        "",
        f"Generated by `bench/run.sh{''.join(' ' + x for x in meta['argv'])}` on {meta['date']}"
        f" ({'QUICK smoke run: numbers are not meaningful' if a.quick else 'full run'}).",
        "",
        "## Set-up",
        "",
        f"- Machine: {meta['machine']}.",
        f"- CPU in use by anything when the run started / ended (1 s of /proc/stat): {meta['load_before'] * 100:.0f} %"
        f" / {meta['load_after'] * 100:.0f} %"
        + (" — **something else was running: treat the numbers as noisy**."
           if max(meta['load_before'], meta['load_after']) >= 0.15 and not a.quick else "."),
        f"- frontend-proxy {meta['git']} (release build), {meta['versions']['nginx']}, {meta['versions']['haproxy']},"
        f" {meta['versions']['wrk']}, oha: {meta['versions']['oha']}.",
        f"- Pinning: every proxy gets one worker (`--concurrency 1`, `nbthread 1`, `worker_processes 1`) pinned"
        f" to CPU {PROXY_CPU} with `taskset`; wrk / oha and the shared nginx backend are pinned to CPU {LOAD_CPU}."
        " `proxy core busy` is the proxy's CPU time over the run's wall time: a throughput figure only says"
        " something about the proxy when that is near 100 %; otherwise CPU 0 (load generator + backend) is the limit.",
        f"- Backend: one nginx worker, `return 200` with a {len(BODY)}-byte body, a 64 KiB file for (d),"
        " three ports for (e). Keep-alive to the backend everywhere (nginx `keepalive 1024`, HAProxy"
        " `http-reuse always`, Pingora's connection pool). No access logs anywhere; frontend-proxy runs with its defaults (`--log-level info`, no"
        " `access_log` in its config, so no line per request).",
        "- TLS and HTTP/2 scenarios (f–k): a self-signed ECDSA P-256 certificate; each proxy with its TLS defaults"
        " (TLS 1.3 negotiated; session tickets on in all three; nginx keeps no session cache by default, HAProxy"
        " a 20000-entry one). (f) is wrk over TLS; (g) and (h) are 16 `openssl s_time` clients side by side, each"
        " a handshake + one GET + close per request, full handshakes in (g), the first session offered"
        " again in (h); (i), (j) and (k) are h2load, one thread, 16 connections × 32 concurrent streams. Upstream is"
        " plaintext HTTP/1.1 keep-alive in every scenario but (k).",
        "- gRPC (k): unary calls over h2c, each a POST of one 14-byte length-prefixed protobuf message"
        " (`content-type: application/grpc`, `te: trailers`; `h2load -d`) to a tonic server"
        " (bench/grpc-backend, one thread on CPU 0, `TCP_NODELAY` as gRPC servers set it) that echoes it"
        " with grpc-status 0 in the trailers; h2c"
        " upstream too (frontend-proxy: the cluster's `explicit_http_config.http2_protocol_options`; nginx:"
        " `grpc_pass grpc://`; HAProxy: `proto h2` on bind and server). A call counts only when it was a 2xx"
        " and the backend answered as many calls with grpc-status 0 (its counter, read around each run);"
        " anything else is in the errors column.",
        f"- Each cell: {a.warmup} s warm-up, then {a.rounds} runs of {a.duration} s, alternating between targets"
        " (A/B/C/A/B/C, rotated each round); the table shows the median and every run.",
        "- Latency columns of the throughput tables come from wrk, a **closed-loop** generator: at saturation"
        " they mostly measure queueing, not the proxy. The open-loop table below is the one to compare latency with.",
        "- CPU s / 100k req: utime + stime from `/proc/PID/stat` (all threads; nginx master + worker) over the run,"
        " per 100,000 successful responses; split into user-space and kernel (system calls, loopback TCP) time per"
        " request. The kernel share is most of it and about the same for every proxy (the same four system calls"
        " per keep-alive request): proxies differ in the user column. Peak RSS: `VmHWM` of the serving process"
        " after the scenario; PSS: sum"
        " over the proxy's processes from `/proc/PID/smaps_rollup`.",
        "",
        "## Summary: round by round",
        "",
        "Throughput ratios within each round (its runs are seconds apart; the machine's speed drifts over"
        " minutes, so these are steadier than a ratio of medians): the median over the rounds, their range,"
        " and in how many rounds the first was ahead.",
        "",
        summary_table(results, meta["sections"], names, primary),
        "",
        "CPU per request in the same rounds: the first's CPU seconds per 100 k requests over the other's"
        " (below 1: it needs less CPU for the same work). Where both keep their core busy this says what the"
        " throughput ratio says; where one is limited by the load core instead (the relay in (a), every proxy"
        " in (c)), only this one measures the proxy.",
        "",
        summary_table(results, meta["sections"], names, primary, attr="cpu_per_100k"),
        "",
    ]
    ceiling = paired(results.get("pinned:(a) 64 conns", {}), primary, "relay")
    if ceiling:
        out += [f"The ceiling in (a): {primary}/relay {paired_cell(ceiling)}, where `relay` is HAProxy in"
                " `mode tcp` (each client connection gets its own backend connection, bytes pass unread): the"
                " same four system calls per request with almost no user-space work, so no HTTP proxy can go"
                " much faster on this machine. nginx/relay and haproxy/relay in the same rounds:"
                f" {paired_cell(paired(results['pinned:(a) 64 conns'], 'nginx', 'relay'))},"
                f" {paired_cell(paired(results['pinned:(a) 64 conns'], 'haproxy', 'relay'))}.", ""]
    for key, title in meta["sections"]:
        if key not in results:
            continue
        out += [f"## {title}", "", results_table(results[key], names + ["relay"], primary), ""]
    if lat:
        direct = lat.get("direct")
        out += [f"## Open-loop latency at {a.rate} req/s (oha, latency correction, 64 connections, scenario a)", "",
                "| proxy | p50 µs | p99 µs | p99.9 µs | p99 added over direct µs | achieved req/s | errors |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for n in names:
            if n in lat:
                l = lat[n]
                added = f"{l['p99_us'] - direct['p99_us']:.0f}" if direct and n != "direct" else "–"
                out.append(f"| {n} | {l['p50_us']:.0f} | {l['p99_us']:.0f} | {l['p999_us']:.0f} | {added} | {l['rps']:.0f} | {l['errors']:.0f} |")
        out.append("")
    elif not a.quick:
        out += ["## Open-loop latency", "", "oha was not installed, so there is no open-loop latency measurement"
                " (`cargo install oha`, or `bench/run.sh --install-oha`).", ""]
    if idle:
        per, n = idle
        cols = [(meta.get(f"idle_{p}") or {}, h) for p, h in
                (("tls", "TLS"), ("h2", "HTTP/2 over TLS"), ("h2c", "h2c"))]
        out += [f"## Memory per idle keep-alive connection ({n} connections; TLS and HTTP/2: fewer)", "",
                "Each connection gets one response and stays open; the connections are opened"
                f" {Bench.IDLE_BATCH} at a time (each batch sends its requests, then reads the responses),"
                " so that the upstream connections a proxy keeps pooled stay those of the warm-up. The"
                " serving process's resident memory"
                " (VmRSS; nginx: its worker) before and after, over the number of connections. The kernel's"
                " socket memory is not in it. TLS: the same over TLS 1.3 (scenario f's set-up), with what"
                " each proxy keeps per TLS session; HTTP/2: the connection preface, SETTINGS and one GET"
                " on stream 1 (scenarios i and j's set-ups), with what each keeps per HTTP/2 connection"
                " (HPACK tables, stream store, flow-control state).", "",
                "| proxy | KiB per idle connection |" + "".join(f" {h} |" for _, h in cols),
                "|---|---:|" + "---:|" * len(cols)]
        out += [f"| {k} | {v:.1f} |" + "".join(f" {c[k]:.1f} |" if k in c else " – |" for c, _ in cols)
                for k, v in per.items()]
        out.append("")
    if instr:
        base = {k: instr[k] for k in ("haproxy", "nginx") if k in instr}
        out += ["## Instructions per request (callgrind, scenario a traffic, one request at a time)", "",
                "User-space instructions the proxy executes per proxied request, all threads"
                " (nginx: master and worker), kernel excluded. Unlike req/s this count does not move with"
                " machine load: it is the number to compare builds with.", "",
                "| proxy | instructions / request |" + "".join(f" × {k} |" for k in base),
                "|---|---:|" + "---:|" * len(base)]
        for n, v in instr.items():
            out.append(f"| {n} | {v:,.0f} |" + "".join(f" {v / bv:.2f} |" for bv in base.values()))
        out.append("")
    tls_instr = meta.get("tls_instr")
    if tls_instr:
        base = {k: tls_instr[k] for k in ("haproxy", "nginx") if k in tls_instr}
        out += ["## Instructions per TLS connection (callgrind; handshake, one GET, close)", "",
                "User-space instructions per TLS 1.3 connection with the ECDSA P-256 certificate, a full handshake"
                " and one offering the first connection's session (resumed); all threads, kernel excluded. The"
                " share of offered sessions the proxy resumed is in brackets.", "",
                "| proxy | full handshake | resumed | " + "".join(f"full × {k} | resumed × {k} | " for k in base),
                "|---|---:|---:|" + "---:|---:|" * len(base)]
        for n, v in tls_instr.items():
            out.append(f"| {n} | {v['full']:,.0f} | {v['resumed']:,.0f} ({v['resumed_share'] * 100:.0f} %) |"
                       + "".join(f" {v['full'] / bv['full']:.2f} | {v['resumed'] / bv['resumed']:.2f} |"
                                 for bv in base.values()))
        out.append("")
    if meta.get("chart"):
        out += ["## Chart", "", "![throughput and CPU per request](results.png)", ""]
    out += ["## Exact commands", "", "```"]
    for k, v in b.commands.items():
        out.append(f"{k}: {v}")
    out += ["```", "", "Configurations are generated by `bench/bench.py` (functions `backend_conf`,"
            " `nginx_proxy_conf`, `haproxy_conf`, `frontend_proxy_conf`).", ""]
    # The services' benchmark (bench/services.sh) keeps its section here.
    services = os.path.join(HERE, "SERVICES.md")
    if os.path.exists(services):
        with open(services) as f:
            out += [f.read().rstrip(), ""]
    out += kept_sections(os.path.join(HERE, "RESULTS.md"))
    with open(path, "w") as f:
        f.write("\n".join(out))


# Sections of bench/RESULTS.md written by hand, which a new report keeps.
KEPT_SECTIONS = ("## What made it fast", "## Left for later")


def kept_sections(path):
    """The hand-written sections of the report at `path`, as lines."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return []
    out, keep = [], False
    for line in text.splitlines():
        if line.startswith("## "):
            keep = line.strip() in KEPT_SECTIONS
        if keep:
            out.append(line)
    return out + [""] if out else []


# --------------------------------------------------------------------------- profile


def profile(b, a):
    """perf record of frontend-proxy (pinned, one worker) under scenario (a)."""
    os.makedirs(a.out, exist_ok=True)
    data = os.path.join(a.out, "perf.data")
    sc = next(s for s in SCENARIOS if s.key == (a.scenarios if len(a.scenarios) == 1 else "a"))
    try:
        b.start_backend()
        (t,) = b.start_proxies(sc, 1, PROXY_CPU, ["frontend-proxy"])
        b.wrk(t, sc, 1, warmup=True)
        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "--call-graph", "dwarf,16384",
                                 "-o", data, "-p", str(t.proc.proc.pid), "--", "sleep", str(a.profile)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        res = b.wrk(t, sc, a.profile + 1)
        perf.wait(timeout=60)
        log(f"under perf: {res.rps:.0f} req/s, {res.cpu_per_100k:.2f} s/100k")
    finally:
        b.stop_all()
    log(f"wrote {data}; e.g. perf report -i {data} --no-children --sort dso,symbol")


# --------------------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", required=True, help="frontend-proxy release binary")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                   help="compare other frontend-proxy builds instead of HAProxy/nginx (A/B of an optimization);"
                        " PATH may carry arguments: 'pingora=target/release/frontend-proxy --http1-engine pingora'")
    p.add_argument("--quick", action="store_true", help="smoke run: a second or two per cell")
    p.add_argument("--scenarios", default=ALL_SCENARIOS)
    p.add_argument("--out", default=HERE, help="where RESULTS.md and results.png go")
    p.add_argument("--grpc-backend", help="bench/grpc-backend's binary, for scenario (k) (bench/run.sh builds it)")
    p.add_argument("--oha", default=shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha"))
    p.add_argument("--rate", type=int, default=10000, help="open-loop request rate")
    p.add_argument("--duration", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--no-deployed", action="store_true", help="skip the unpinned 2-worker run")
    p.add_argument("--no-latency", action="store_true", help="skip the open-loop latency run")
    p.add_argument("--idle", action="store_true", help="also measure memory per idle connection with --variant")
    p.add_argument("--no-instructions", dest="instructions", action="store_false",
                   help="skip the callgrind instruction count (needs valgrind)")
    p.add_argument("--profile", metavar="SECONDS", type=int,
                   help="instead of benchmarking: perf-record frontend-proxy under scenario (a) load")
    a = p.parse_args()
    # 2 s runs keep a clean clone's build + full run under 10 minutes on 2 cores;
    # three alternating runs per cell absorb more noise than longer ones do.
    a.duration = a.duration or (1 if a.quick else 2)
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.warmup = 1
    a.latency_duration = 1 if a.quick else 3
    a.latency_rounds = 1 if a.quick else 3
    a.binaries = {"frontend-proxy": a.binary}
    for v in a.variant:
        name, _, path = v.partition("=")
        a.binaries[name] = path
    if not (a.oha and os.access(a.oha, os.X_OK)):
        a.oha = None
    if a.instructions and not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        log("valgrind not found: no instruction count (bench/run.sh installs it)")
        a.instructions = False
    for tool in ("wrk", "nginx", "haproxy", "taskset", "openssl", "h2load"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: run bench/run.sh, which installs it")
    if any(sc.grpc and sc.key in a.scenarios for sc in SCENARIOS) and not (
            a.grpc_backend and os.access(a.grpc_backend, os.X_OK)):
        sys.exit("scenario (k) needs --grpc-backend PATH: run bench/run.sh, which builds bench/grpc-backend")

    if a.variant:
        names = ["frontend-proxy"] + [v.partition("=")[0] for v in a.variant]
    else:
        names = ["direct", "frontend-proxy", "haproxy", "nginx"]
    b = Bench(a)
    if a.profile:
        return profile(b, a)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "git": git_rev(),
        "load_before": cpu_busy(),
        "versions": {"nginx": version(["nginx", "-v"]), "haproxy": version(["haproxy", "-v"]),
                     "wrk": version(["wrk", "-v"]), "oha": version([a.oha, "--version"]) if a.oha else "not installed"},
        "sections": [],
        "argv": [x for x in sys.argv[1:] if not x.startswith(("--binary", "--grpc-backend"))
                 and x not in (a.binary, a.grpc_backend)],
    }
    results = {}
    lat = None
    instr = None
    idle = None
    started = time.time()
    try:
        b.start_backend()
        for sc in SCENARIOS:
            if sc.key not in a.scenarios:
                continue
            # One backend port stands in for three in (e): direct is not meaningful there.
            which = [n for n in names if not ((sc.backends > 1 or sc.proto != "http") and n == "direct")]
            if sc.key == "a" and not a.variant:
                which.append("relay")
            log(f"scenario {sc.key}: {sc.title}")
            key = f"pinned:{sc.short}"
            results[key] = b.throughput(sc, which)
            meta["sections"].append((key, f"({sc.key}) {sc.title} — 1 worker, pinned"))
        if a.oha and not a.no_latency:
            log(f"open-loop latency at {a.rate} req/s")
            lat = b.latency(names)
        if not a.variant or a.idle:
            log("memory per idle keep-alive connection")
            idle = b.idle_memory(names, 200 if a.quick else 5000)
            for proto, label in (("tls", "TLS"), ("h2", "HTTP/2 over TLS"), ("h2c", "h2c")):
                log(f"memory per idle keep-alive {label} connection")
                meta[f"idle_{proto}"] = b.idle_memory(names, 100 if a.quick else 2000, proto=proto)[0]
        if a.instructions:
            log("user-space instructions per request (callgrind)")
            instr = b.instructions(names, n=300 if a.quick else 2000)
            if any(k in a.scenarios for k in "fgh"):
                log("user-space instructions per TLS connection, full and resumed (callgrind)")
                meta["tls_instr"] = b.tls_instructions(names, n=30 if a.quick else 200)
        if not a.no_deployed and not a.variant:
            log("as deployed: 2 workers, nothing pinned")
            sc = SCENARIOS[0]
            key = "deployed:(a) 2 workers unpinned"
            results[key] = b.throughput(sc, names, workers=2, cpu=None, load_cpu=None)
            meta["sections"].append((key, "As deployed: 2 workers each, nothing pinned, scenario (a)"
                                           " (wrk, backend and proxy share both cores)"))
    finally:
        b.stop_all()
    meta["load_after"] = cpu_busy()
    os.makedirs(a.out, exist_ok=True)
    meta["chart"] = chart(results, names, os.path.join(a.out, "results.png"))
    write_report(b, results, lat, instr, idle, names, meta, os.path.join(a.out, "RESULTS.md"))
    shutil.rmtree(b.workdir, ignore_errors=True)
    log(f"done in {time.time() - started:.0f} s: {os.path.join(a.out, 'RESULTS.md')}")


if __name__ == "__main__":
    main()
