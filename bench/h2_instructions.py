#!/usr/bin/env python3
"""User-space instructions per HTTP/2 request of a frontend-proxy build
under callgrind (bench/RESULTS.md, issue 26): the bench's nginx backend
(HTTP/1.1 upstream) or, given GRPC_BACKEND (bench/grpc-backend), unary
gRPC calls to it over h2c; one worker; 1000 warm-up requests, then the
counters are zeroed and N requests go over 4 connections x 8 streams
(h2load). A count machine noise does not move; wall-clock is not measured.

usage: h2_instructions.py [--strace] [--frames] BINARY|haproxy h2c|h2|h1 [N] [GRPC_BACKEND]

`h1` is plaintext HTTP/1.1 instead (scenario a's requests, 4 keep-alive
connections, one request at a time on each: `h2load --h1 -m1`), for a
profile of the path both protocols share.

BINARY `haproxy` measures HAProxy with the bench's configuration of the
same scenario (bench.py's `haproxy_conf`, one thread). `--strace` counts
system calls per request instead (`strace -c -f`, attached after the
warm-up). `--frames` puts a relay between the proxy and the backend that
counts the HTTP/2 frames each way by type, and the upstream connections,
per request (the relay adds its own hop: run it apart from the counts)."""
import glob
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B

args = [a for a in sys.argv[1:] if not a.startswith("--")]
flags = {a for a in sys.argv[1:] if a.startswith("--")}
binary, proto = args[0], args[1]
n = int(args[2]) if len(args) > 2 else 20000
grpc = args[3] if len(args) > 3 else None
mode = "strace" if "--strace" in flags else "callgrind"

FRAME_TYPES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS", 5: "PUSH_PROMISE",
               6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE", 9: "CONTINUATION"}


class FrameRelay:
    """A TCP relay that parses the h2c bytes passing each way into frames
    (type counts, writes that carried them) and counts its connections."""

    def __init__(self, target_port):
        self.target = target_port
        self.lock = threading.Lock()
        self.reset()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def reset(self):
        with self.lock:
            self.connections = 0
            self.frames = {"up": {}, "down": {}}
            self.reads = {"up": 0, "down": 0}

    def accept(self):
        while True:
            c, _ = self.sock.accept()
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            u = socket.create_connection(("127.0.0.1", self.target))
            u.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
            threading.Thread(target=self.pipe, args=(c, u, "up", True), daemon=True).start()
            threading.Thread(target=self.pipe, args=(u, c, "down", False), daemon=True).start()

    def pipe(self, src, dst, way, preface):
        buf = b""
        skip = 24 if preface else 0
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try: dst.shutdown(socket.SHUT_WR)
                except OSError: pass
                return
            dst.sendall(data)
            buf += data
            if skip:
                k = min(skip, len(buf)); buf = buf[k:]; skip -= k
            with self.lock:
                self.reads[way] += 1
                while len(buf) >= 9:
                    length = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + length:
                        break
                    t = FRAME_TYPES.get(buf[3], str(buf[3]))
                    self.frames[way][t] = self.frames[way].get(t, 0) + 1
                    buf = buf[9 + length:]


wd = tempfile.mkdtemp(prefix=f"h2-instructions-{proto}-")
os.chmod(wd, 0o755)
for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
    os.makedirs(f"{wd}/backend-tmp/{sub}", exist_ok=True)
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", f"{wd}/key.pem", "-out", f"{wd}/cert.pem", "-days", "2", "-subj", "/CN=bench"],
               check=True, capture_output=True)
with open(f"{wd}/combined.pem", "w") as f:
    f.write(open(f"{wd}/cert.pem").read() + open(f"{wd}/key.pem").read())
procs = []
relay = None
try:
    if grpc:
        gp, gs = B.free_port(), B.free_port()
        p = subprocess.Popen([grpc, str(gp), str(gs)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p); B.wait_port(gp, p); bports = [gp]
    else:
        bports = [B.free_port()]
        with open(f"{wd}/backend.conf", "w") as f:
            f.write(B.backend_conf(wd, bports))
        p = subprocess.Popen(["nginx", "-p", wd, "-c", f"{wd}/backend.conf", "-e", f"{wd}/be.log"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p); B.wait_port(bports[0], p)
    if "--frames" in flags:
        relay = FrameRelay(bports[0])
        bports = [relay.port]
    port = B.free_port()
    if binary == "haproxy":
        with open(f"{wd}/haproxy.cfg", "w") as f:
            f.write(B.haproxy_conf(port, bports, 1, proto="http" if proto == "h1" else proto, workdir=wd, grpc=bool(grpc)))
        cmd = ["haproxy", "-db", "-f", f"{wd}/haproxy.cfg"]
    else:
        with open(f"{wd}/fp.yaml", "w") as f:
            f.write(B.frontend_proxy_conf(port, bports, "http" if proto == "h1" else proto, wd, grpc=bool(grpc)))
        cmd = [binary, "-c", f"{wd}/fp.yaml", "--concurrency", "1", "--log-level", "warning"]
    cg = f"{wd}/cg.out"
    prefix = [] if mode == "strace" or relay else ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}.%p"]
    fp = subprocess.Popen(prefix + cmd, stdout=open(f"{wd}/fp.log", "w"), stderr=subprocess.STDOUT)
    procs.append(fp); B.wait_port(port, fp, timeout=60)
    url = f"{'https' if proto == 'h2' else 'http'}://127.0.0.1:{port}" + ("/bench.Echo/Unary" if grpc else "/")
    extra = []
    if grpc:
        with open(f"{wd}/req.bin", "wb") as f:
            f.write(B.GRPC_REQUEST)
        extra = ["-d", f"{wd}/req.bin", "-H", "content-type: application/grpc", "-H", "te: trailers"]
    def load(k):
        shape = ["--h1", "-m1"] if proto == "h1" else ["-m8"]
        out = subprocess.run(["h2load", "-n", str(k), "-c4", *shape, *extra, url], capture_output=True, text=True, timeout=900)
        line = [l for l in out.stdout.splitlines() if l.startswith("status codes") or l.startswith("requests:")]
        return line
    print(load(1000), file=sys.stderr)
    if relay:
        relay.reset()
        print(load(n), file=sys.stderr)
        time.sleep(0.5)
        with relay.lock:
            print(f"upstream connections opened during the run: {relay.connections}")
            for way, what in (("up", "proxy -> backend"), ("down", "backend -> proxy")):
                per = ", ".join(f"{t} {c / n:.3f}" for t, c in sorted(relay.frames[way].items()))
                print(f"{what}: frames/request: {per}; relay reads/request {relay.reads[way] / n:.3f}")
    elif mode == "strace":
        out = f"{wd}/strace.txt"
        st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(fp.pid)], stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        print(load(n), file=sys.stderr)
        st.send_signal(2); st.wait(30)
        print(f"{proto}{' grpc' if grpc else ''} ({binary}): system calls per request")
        for line in open(out):
            parts = line.split()
            if len(parts) >= 5 and parts[3].isdigit():
                calls, name = int(parts[3]), parts[-1]
                if calls / n >= 0.01:
                    print(f"  {name:<16} {calls / n:7.3f}")
            elif parts and parts[-1] == "total":
                print(f"  {'total':<16} {int(parts[2]) / n:7.3f}")
    else:
        subprocess.run(["callgrind_control", "--zero", str(fp.pid)], capture_output=True, timeout=60)
        for f in glob.glob(cg + "*"): os.remove(f)
        print(load(n), file=sys.stderr)
        subprocess.run(["callgrind_control", "--dump", str(fp.pid)], capture_output=True, timeout=60)
        total = 0
        for f in glob.glob(cg + "*"):
            for line in open(f):
                if line.startswith(("summary:", "totals:")):
                    total += int(line.split()[1]); break
        print(f"{proto}{' grpc' if grpc else ''} ({binary}): {total / n:.0f} instructions/request  ({wd})")
finally:
    for p in reversed(procs):
        p.terminate()
        try: p.wait(10)
        except Exception: p.kill()
