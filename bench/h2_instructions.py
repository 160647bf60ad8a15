#!/usr/bin/env python3
"""User-space instructions per HTTP/2 request of a frontend-proxy build
under callgrind (bench/RESULTS.md, issue 26): the bench's nginx backend
(HTTP/1.1 upstream) or, given GRPC_BACKEND (bench/grpc-backend), unary
gRPC calls to it over h2c; one worker; 1000 warm-up requests, then the
counters are zeroed and N requests go over 4 connections x 8 streams
(h2load). A count machine noise does not move; wall-clock is not measured.

usage: h2_instructions.py BINARY h2c|h2 [N] [GRPC_BACKEND]"""
import glob
import os
import subprocess
import sys
import tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B

binary, proto = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
grpc = sys.argv[4] if len(sys.argv) > 4 else None
wd = tempfile.mkdtemp(prefix=f"h2-instructions-{proto}-")
os.chmod(wd, 0o755)
for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
    os.makedirs(f"{wd}/backend-tmp/{sub}", exist_ok=True)
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", f"{wd}/key.pem", "-out", f"{wd}/cert.pem", "-days", "2", "-subj", "/CN=bench"],
               check=True, capture_output=True)
procs = []
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
    port = B.free_port()
    with open(f"{wd}/fp.yaml", "w") as f:
        f.write(B.frontend_proxy_conf(port, bports, proto, wd, grpc=bool(grpc)))
    cg = f"{wd}/cg.out"
    fp = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}.%p", binary, "-c", f"{wd}/fp.yaml",
                           "--concurrency", "1", "--log-level", "warning"], stdout=open(f"{wd}/fp.log", "w"), stderr=subprocess.STDOUT)
    procs.append(fp); B.wait_port(port, fp, timeout=60)
    url = f"{'https' if proto == 'h2' else 'http'}://127.0.0.1:{port}" + ("/bench.Echo/Unary" if grpc else "/")
    extra = []
    if grpc:
        with open(f"{wd}/req.bin", "wb") as f:
            f.write(B.GRPC_REQUEST)
        extra = ["-d", f"{wd}/req.bin", "-H", "content-type: application/grpc", "-H", "te: trailers"]
    def load(k):
        out = subprocess.run(["h2load", "-n", str(k), "-c4", "-m8", *extra, url], capture_output=True, text=True, timeout=900)
        line = [l for l in out.stdout.splitlines() if l.startswith("status codes") or l.startswith("requests:")]
        return line
    print(load(1000), file=sys.stderr)
    subprocess.run(["callgrind_control", "--zero", str(fp.pid)], capture_output=True, timeout=60)
    for f in glob.glob(cg + "*"): os.remove(f)
    print(load(n), file=sys.stderr)
    subprocess.run(["callgrind_control", "--dump", str(fp.pid)], capture_output=True, timeout=60)
    total = 0
    for f in glob.glob(cg + "*"):
        for line in open(f):
            if line.startswith(("summary:", "totals:")):
                total += int(line.split()[1]); break
    print(f"{proto}{' grpc' if grpc else ''}: {total / n:.0f} instructions/request  ({wd})")
finally:
    for p in reversed(procs):
        p.terminate()
        try: p.wait(10)
        except Exception: p.kill()
