#!/usr/bin/env python3
"""Benchmark of film-service and rating-service on their databases, through
frontend-proxy, on loopback: `POST /films` and `GET /films/{id}` with five
replicas of each service on one PostgreSQL, and with one replica of each on
SQLite; then the read paths on a films table of 1,000,000 rows.

Reports requests per second, p99 latency (wrk, closed loop) and, on
PostgreSQL, database round trips per request: the transactions the server
counted (pg_stat_database xact_commit + xact_rollback; each statement the
services send is one transaction and, once prepared on its connection, one
round trip) over the requests wrk counted.

Writes bench/SERVICES.md and puts the same section into bench/RESULTS.md
(bench/bench.py includes SERVICES.md when it rewrites RESULTS.md).

Usage: bench/services.sh [--duration S] [--rows N] [--out DIR]
"""

import argparse
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CONNECTIONS = 16


def log(msg):
    print(f"[services.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir():
    versions = sorted(
        (int(v), os.path.join("/usr/lib/postgresql", v, "bin"))
        for v in os.listdir("/usr/lib/postgresql")
        if v.isdigit()
    )
    return versions[-1][1]


def as_postgres(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd


class Postgres:
    """A private cluster with PostgreSQL's default durability (fsync on)."""

    def __init__(self, workdir):
        self.bin = pg_bindir()
        self.dir = os.path.join(workdir, "pg")
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            shutil.chown(workdir, "postgres")
            shutil.chown(self.dir, "postgres")
        self.port = free_port()
        subprocess.run(as_postgres([f"{self.bin}/initdb", "-D", f"{self.dir}/data", "-U", "postgres", "-A", "trust",
                                    "-E", "UTF8"]), check=True, stdout=subprocess.DEVNULL)
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        subprocess.run(as_postgres([f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w",
                                    "-o", opts, "start"]), check=True, stdout=subprocess.DEVNULL)

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def sql(self, db, query):
        out = subprocess.run(["psql", "-qAtX", self.url(db), "-c", query], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def transactions(self, db):
        return int(self.sql("postgres", f"SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{db}'"))

    def stop(self):
        subprocess.run(as_postgres([f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-m", "fast", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Processes:
    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, name, cmd, env=None):
        logf = open(os.path.join(self.workdir, f"{name}.log"), "wb")
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.procs.append(proc)
        return proc

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []


def wait_ok(url, within=60):
    deadline = time.time() + within
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        if time.time() > deadline:
            raise SystemExit(f"{url} not ready within {within}s")
        time.sleep(0.2)


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def proxy_conf(port, films, ratings):
    def cluster(name, ports):
        eps = "".join(f"""
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {p} }}""" for p in ports)
        return f"""  - name: {name}
    connect_timeout: 0.25s
    type: STATIC
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:{eps}
"""

    return f"""static_resources:
  listeners:
  - name: bench
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    filter_chains:
    - filters:
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
              - match: {{ prefix: "/films" }}
                route: {{ cluster: films }}
              - match: {{ prefix: "/ratings" }}
                route: {{ cluster: ratings }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{cluster("films", films)}{cluster("ratings", ratings)}"""


POST_LUA = """
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
local counter = 0
function init(args)
  prefix = args[1]
end
request = function()
  counter = counter + 1
  local body = string.format('{"name":"%s-%d-%d","language":"English"}', prefix, tid, counter)
  return wrk.format("POST", "/films", {["Content-Type"] = "application/json"}, body)
end
"""

# GET of random lines of a file: PATH_PREFIX .. line.
GET_LUA = """
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
function init(args)
  items = {}
  for line in io.lines(args[1]) do items[#items + 1] = line end
  prefix = args[2]
  math.randomseed(os.time() * 100 + tid)
end
request = function()
  return wrk.format("GET", prefix .. items[math.random(#items)])
end
"""


class Bench:
    def __init__(self, a, workdir):
        self.a = a
        self.workdir = workdir
        with open(os.path.join(HERE, "report.lua")) as f:
            self.report = f.read()
        self.scripts = {}
        for name, body in (("post", POST_LUA), ("get", GET_LUA)):
            path = os.path.join(workdir, f"{name}.lua")
            with open(path, "w") as f:
                f.write(body + self.report)
            self.scripts[name] = path

    def wrk(self, url, script=None, args=(), duration=None, connections=CONNECTIONS):
        cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration or self.a.duration}s", "--timeout", "10s"]
        cmd += ["-s", self.scripts[script] if script else os.path.join(HERE, "report.lua"), url]
        if args:
            cmd += ["--"] + list(args)
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        m = re.search(r"WRKJSON (\{.*\})", out)
        r = json.loads(m.group(1))
        r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
        r["errors"] = r["status_errors"] + r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"]
        return r


def run_scenario(b, procs, name, replicas, films_url, ratings_url, pg=None):
    """Starts `replicas` of each service and the proxy; POST then GET."""
    rating_ports = [free_port() for _ in range(replicas)]
    film_ports = [free_port() for _ in range(replicas)]
    bins = b.a.bin_dir
    for i, p in enumerate(rating_ports):
        procs.start(f"{name}-rating-{i}", [f"{bins}/rating-service", "--listen", f"127.0.0.1:{p}",
                                          "--database-url", ratings_url])
    for i, p in enumerate(film_ports):
        procs.start(f"{name}-film-{i}", [f"{bins}/film-service", "--listen", f"127.0.0.1:{p}",
                                        "--database-url", films_url,
                                        "--rating-service-url", f"http://127.0.0.1:{rating_ports[i]}"])
    for p in rating_ports + film_ports:
        wait_ok(f"http://127.0.0.1:{p}/healthz")
    port = free_port()
    conf = os.path.join(b.workdir, f"{name}-proxy.yaml")
    with open(conf, "w") as f:
        f.write(proxy_conf(port, film_ports, rating_ports))
    procs.start(f"{name}-proxy", [f"{bins}/frontend-proxy", "-c", conf, "--log-level", "warning"])
    base = f"http://127.0.0.1:{port}"
    wait_ok(f"{base}/films?limit=1")
    # Warm every connection of every pool (statements are prepared per
    # connection on first use).
    b.wrk(f"{base}/films", "post", [f"warm-{name}"], duration=2)

    results = {}
    if pg:
        time.sleep(11)  # the warm-up's statistics must be flushed before counting
    before = (pg.transactions("films"), pg.transactions("ratings")) if pg else None
    post = b.wrk(f"{base}/films", "post", [f"bench-{name}"])
    ids = [f["id"] for f in get_json(f"{base}/films?limit=1000")]
    ids_file = os.path.join(b.workdir, f"{name}-ids.txt")
    with open(ids_file, "w") as f:
        f.write("\n".join(ids) + "\n")
    if pg:
        time.sleep(11)  # idle backends flush their statistics within 10 s
        mid = (pg.transactions("films"), pg.transactions("ratings"))
        # The listing that fetched the ids is one statement on films.
        post["rt_films"] = (mid[0] - before[0] - 1) / post["requests"]
        post["rt_ratings"] = (mid[1] - before[1]) / post["requests"]
    get = b.wrk(f"{base}/films/", "get", [ids_file, "/films/"])
    if pg:
        time.sleep(11)
        after = (pg.transactions("films"), pg.transactions("ratings"))
        get["rt_films"] = (after[0] - mid[0]) / get["requests"]
        get["rt_ratings"] = (after[1] - mid[1]) / get["requests"]
    results["post"], results["get"] = post, get
    log(f"{name}: POST {post['rps']:.0f} req/s p99 {post['p99_us'] / 1000:.1f} ms, "
        f"GET {get['rps']:.0f} req/s p99 {get['p99_us'] / 1000:.1f} ms")
    return results, base


def bulk_load_postgres(pg, rows):
    pg.sql("films", f"""INSERT INTO films (id, name, language)
        SELECT gen_random_uuid(), 'bulk-' || i, 'English' FROM generate_series(1, {rows}) AS i""")
    pg.sql("films", "ANALYZE films")


def bulk_load_sqlite(path, rows):
    conn = sqlite3.connect(path, timeout=30)
    conn.executemany("INSERT INTO films (id, name, language) VALUES (?, ?, 'English')",
                     ((uuid.uuid4().bytes, f"bulk-{i}") for i in range(1, rows + 1)))
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def big_table_reads(b, name, base, rows, workdir):
    """The read paths on a table of `rows` films: by id, by name, first page,
    a page deep in the table."""
    sample = [f"bulk-{random.randint(1, rows)}" for _ in range(1000)]
    names = os.path.join(workdir, f"{name}-names.txt")
    with open(names, "w") as f:
        f.write("\n".join(sample) + "\n")
    ids = os.path.join(workdir, f"{name}-bulk-ids.txt")
    with open(ids, "w") as f:
        for n in sample[:200]:
            f.write(get_json(f"{base}/films?name={n}")["id"] + "\n")
    total = len(get_json(f"{base}/films?limit=1000"))
    # The cursor of a page near the end: follow Link from a deep position.
    deep_after = rows - 200
    d = max(3, b.a.duration // 2)
    out = {
        "by id": b.wrk(f"{base}/films/", "get", [ids, "/films/"], duration=d),
        "by name": b.wrk(f"{base}/films", "get", [names, "/films?name="], duration=d),
        "first page (100)": b.wrk(f"{base}/films?limit=100", duration=d),
        f"page after {deep_after:,} (100)": b.wrk(f"{base}/films?limit=100&after={deep_after}", duration=d),
    }
    assert total == 1000
    for k, v in out.items():
        log(f"{name} {rows:,} rows, {k}: {v['rps']:.0f} req/s p99 {v['p99_us'] / 1000:.1f} ms, errors {v['errors']}")
    return out


def plans(pg):
    queries = {
        "GET /films/{id}": "SELECT id, name, language FROM films WHERE id = '00000000-0000-0000-0000-000000000000' AND pending_since IS NULL",
        "GET /films?name=": "SELECT id, name, language FROM films WHERE name = 'bulk-5' AND pending_since IS NULL",
        "GET /films?after=": "SELECT seq, id, name, language FROM films WHERE seq > 999000 AND pending_since IS NULL ORDER BY seq LIMIT 101",
    }
    # The first two lines: the deep page's Limit sits on its index scan.
    return {k: " / ".join(line.strip() for line in pg.sql("films", "EXPLAIN " + q).splitlines()[:2])
            for k, q in queries.items()}


def ms(us):
    return f"{us / 1000:.1f}"


def report(a, res, big, plan, meta):
    out = ["<!-- services:begin (bench/services.py writes this section) -->",
           "## Services on a database",
           "",
           f"Generated by `bench/services.sh` on {meta['date']} ({meta['machine']}; other builds were running: "
           f"load average {meta['load']}). frontend-proxy, film-service and rating-service release builds "
           f"({meta['commit']}), PostgreSQL {meta['pg']} with its default durability (fsync, synchronous commit), "
           "SQLite in WAL mode with `synchronous=FULL`, all on loopback.",
           "",
           f"Method: wrk, 2 threads, {CONNECTIONS} connections, {a.duration} s per cell after a 2 s warm-up, "
           "through frontend-proxy (round robin over the replicas). `POST /films` creates a film with a new "
           "name each request (reserve, register the rating with rating-service, commit); `GET /films/{id}` "
           "reads one of the last 1000 films created, at random. Round trips: transactions PostgreSQL counted "
           "per database (`pg_stat_database`) over the requests wrk counted; every statement the services send "
           "is one transaction and, once prepared on its connection, one round trip. Latencies are closed-loop "
           "(wrk): at saturation they measure queueing.",
           "",
           "| set-up | request | req/s | p50 ms | p99 ms | errors | round trips: films DB | ratings DB |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for setup, r in res.items():
        for req, key in (("POST /films", "post"), ("GET /films/{id}", "get")):
            x = r[key]
            rt = (f"{x['rt_films']:.2f} | {x['rt_ratings']:.2f}" if "rt_films" in x
                  else "in process | in process")
            out.append(f"| {setup} | {req} | {x['rps']:,.0f} | {ms(x['p50_us'])} | {ms(x['p99_us'])} | "
                       f"{x['errors']} | {rt} |")
    out += ["",
            "A create is two statements on film-service's database (the pending INSERT, the committing "
            "UPDATE) and one on rating-service's (the rating's INSERT); a read is one statement. On SQLite "
            "the same statements run in the service's process, with no round trip.",
            "",
            f"Read paths on a films table of {a.rows:,} rows (loaded with one INSERT, then ANALYZE), "
            f"{max(3, a.duration // 2)} s per cell:",
            "",
            "| set-up | request | req/s | p50 ms | p99 ms | errors |",
            "|---|---|---:|---:|---:|---:|"]
    for setup, reads in big.items():
        for k, x in reads.items():
            out.append(f"| {setup} | {k} | {x['rps']:,.0f} | {ms(x['p50_us'])} | {ms(x['p99_us'])} | {x['errors']} |")
    if plan:
        out += ["", "PostgreSQL's plans at that size (`EXPLAIN`, first lines): each query path has its index.", ""]
        out += [f"- `{k}`: `{v}`" for k, v in plan.items()]
    out += ["", "<!-- services:end -->", ""]
    return "\n".join(out)


def put_section(path, section):
    text = open(path).read() if os.path.exists(path) else ""
    begin, end = "<!-- services:begin", "<!-- services:end -->"
    if begin in text:
        head = text[:text.index(begin)]
        tail = text[text.index(end) + len(end):].lstrip("\n")
        text = head + section + "\n" + tail
    elif "## What was done" in text:
        i = text.index("## What was done")
        text = text[:i] + section + "\n" + text[i:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", required=True, help="where the release binaries are")
    p.add_argument("--duration", type=int, default=10, help="seconds per cell")
    p.add_argument("--rows", type=int, default=1_000_000, help="films in the big-table reads")
    p.add_argument("--out", default=HERE, help="where SERVICES.md goes (and RESULTS.md is updated)")
    a = p.parse_args()
    workdir = tempfile.mkdtemp(prefix="fp-services-bench-")
    os.chmod(workdir, 0o755)
    procs = Processes(workdir)
    pg = None
    try:
        pg = Postgres(workdir)
        for db in ("films", "ratings"):
            pg.sql("postgres", f"CREATE DATABASE {db}")
        res, big = {}, {}
        r, base = run_scenario(Bench(a, workdir), procs, "postgres", 5, pg.url("films"), pg.url("ratings"), pg)
        res["PostgreSQL, 5 + 5 replicas"] = r
        bulk_load_postgres(pg, a.rows)
        big["PostgreSQL, 5 + 5 replicas"] = big_table_reads(Bench(a, workdir), "postgres", base, a.rows, workdir)
        plan = plans(pg)
        procs.stop()
        films_db = os.path.join(workdir, "films.db")
        r, base = run_scenario(Bench(a, workdir), procs, "sqlite", 1, f"sqlite://{films_db}",
                               f"sqlite://{os.path.join(workdir, 'ratings.db')}")
        res["SQLite, 1 + 1 replica"] = r
        bulk_load_sqlite(films_db, a.rows)
        big["SQLite, 1 + 1 replica"] = big_table_reads(Bench(a, workdir), "sqlite", base, a.rows, workdir)
        procs.stop()
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{os.cpu_count()} CPUs",
            "load": open("/proc/loadavg").read().split()[0],
            "commit": subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip(),
            "pg": pg.sql("postgres", "SHOW server_version"),
        }
        section = report(a, res, big, plan, meta)
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "SERVICES.md"), "w") as f:
            f.write(section)
        put_section(os.path.join(a.out, "RESULTS.md"), section)
        log(f"wrote {os.path.join(a.out, 'SERVICES.md')}")
    finally:
        procs.stop()
        if pg:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
