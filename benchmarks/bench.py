"""torc-py benchmarks: each sub-command prints a table (and --json FILE writes the figures).

    python benchmarks/bench.py throughput [--jobs 1000 10000] [--cpus 2]
    python benchmarks/bench.py retry [--jobs 1000]
    python benchmarks/bench.py peer [--jobs 1000]          # Snakemake in a throwaway venv
    python benchmarks/bench.py scale [--scale-jobs 1000000] [--edge-jobs 200000 --edges 2000000]
    python benchmarks/bench.py client [--runs 20]
    python benchmarks/bench.py monitor [--monitor-jobs 64]   # what sampling jobs costs the daemon
    python benchmarks/bench.py workers [--worker-jobs 20000] # emulated workers against workers.poll
    python benchmarks/bench.py all
    --dir DIR: where daemons, workflows and log files live (default: the system's temp dir)

Nothing is deleted until the end: on ext4, deleting thousands of files makes creating files
in the same file system slower for a while, which would slow every later run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
_work: list[Path] = []  # the run's scratch directory, made in main()
_made = 0


def workdir() -> Path:
    """A fresh directory under the run's scratch directory."""
    global _made
    _made += 1
    path = _work[0] / str(_made)
    path.mkdir()
    return path


def file_create_ms(directory: Path, n: int = 200) -> float:
    """CPU time to create one empty file in `directory`: what each torc job spends twice on logs."""
    d = directory / "probe"
    d.mkdir()
    t = time.process_time()
    for i in range(n):
        os.close(os.open(d / str(i), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666))
    return (time.process_time() - t) / n * 1000


class Daemon:
    def __init__(self, root: Path, cpus: int, *extra: str):
        self.root = root
        self.socket = str(root / "torcd.sock")
        self.state = root / "state"
        self.env = dict(os.environ, TORCD_SOCKET=self.socket, TORCD_STATE_DIR=str(self.state))
        self.proc = subprocess.Popen(
            [PY, "-m", "torcd", "--max-parallel-jobs", str(cpus), "--log-level", "warning", *extra],
            env=self.env,
            cwd=root,  # nothing of the daemon's lands where the benchmark was started
            stdout=subprocess.DEVNULL,
            stderr=open(root / "torcd.log", "wb"),
        )
        for _ in range(200):
            if (
                subprocess.run(
                    [PY, "-m", "torcctl", "--no-autostart", "ping"], env=self.env, capture_output=True
                ).returncode
                == 0
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("torcd did not start")

    def ctl(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PY, "-m", "torcctl", "--no-autostart", *args],
            env=self.env,
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
        )

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.state / "torcd.store.db")

    def rss_peak_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def spec_true(n: int, fail_once: bool = False, recovery: bool = False) -> str:
    handler = ""
    command = '"true"'
    if fail_once:
        rule = "recovery_script: 'true'\n        " if recovery else ""
        handler = f"""failure_handlers:
  - name: h
    rules:
      - exit_codes: [10]
        {rule}max_retries: 3
"""
        command = '"[ $TORC_ATTEMPT_ID -ge 2 ] || exit 10"'
    return f"""name: bench
{handler}jobs:
  - name: j{{i}}
    command: {command}
    parameters: {{i: "1:{n}"}}
""" + ("    failure_handler: h\n" if fail_once else "")


async def bare_loop(n: int, cpus: int, log_dir: str | None = None) -> float:
    """The limit: the same n `bash -c true` through a bare asyncio loop, `cpus` at a time.

    With `log_dir`, each job's stdout and stderr go to files of their own there, as torc's do:
    what creating two files per job costs on this filesystem, with nothing else.
    """
    from torcd.daemon import use_pidfd_child_watcher

    use_pidfd_child_watcher()
    sem = asyncio.Semaphore(cpus)
    ids = iter(range(n))

    async def one():
        async with sem:
            if log_dir is None:
                out = err = subprocess.DEVNULL
            else:
                i = next(ids)
                out = open(f"{log_dir}/{i}.o", "ab")  # noqa: ASYNC230 creating the two files is what is measured
                err = open(f"{log_dir}/{i}.e", "ab")  # noqa: ASYNC230
            p = await asyncio.create_subprocess_exec("bash", "-c", "true", stdout=out, stderr=err)
            if log_dir is not None:
                out.close()
                err.close()
            await p.wait()

    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t


def run_spec(d: Daemon, text: str, name: str) -> tuple[float, int]:
    path = d.root / f"{name}.yaml"
    path.write_text(text)
    t = time.perf_counter()
    d.ctl("run", "--quiet", str(path))
    wall = time.perf_counter() - t
    out = d.ctl("--json", "workflows", "list").stdout
    wf = json.loads(out)[-1]["id"]
    return wall, wf


def submit_to_last_completion(d: Daemon, wf: int) -> float:
    with d.db() as db:
        created = db.execute("SELECT created FROM workflows WHERE id = ?", (wf,)).fetchone()[0]
        last = db.execute("SELECT max(end_time) FROM attempts WHERE workflow_id = ?", (wf,)).fetchone()[0]
    return last - created


def throughput(args) -> dict:
    """Alternate torc and the bare loop `--repeat` times per N; report medians and their ratio."""
    rows = []
    for n in args.jobs:
        torc, bare, logged, walls, create = [], [], [], [], []
        for _ in range(args.repeat):
            bare.append(n / asyncio.run(bare_loop(n, args.cpus)))
            logged.append(n / asyncio.run(bare_loop(n, args.cpus, str(workdir()))))
            d = Daemon(workdir(), args.cpus)
            try:
                create.append(file_create_ms(d.root))
                wall, wf = run_spec(d, spec_true(n), f"tp{n}")
                torc.append(n / submit_to_last_completion(d, wf))
                walls.append(wall)
            finally:
                d.stop()
        rows.append(
            {
                "jobs": n,
                "runs": args.repeat,
                "torc_jobs_per_s": statistics.median(torc),
                "torcctl_run_wall_s": statistics.median(walls),
                "bare_loop_jobs_per_s": statistics.median(bare),
                "ratio": statistics.median(torc) / statistics.median(bare),
                "bare_with_log_files_jobs_per_s": statistics.median(logged),
                "ratio_to_bare_with_log_files": statistics.median(torc) / statistics.median(logged),
                "torc_min_max": f"{min(torc):.0f}-{max(torc):.0f}",
                "bare_min_max": f"{min(bare):.0f}-{max(bare):.0f}",
                "file_create_ms": statistics.median(create),
            }
        )
    print_table("throughput: N x `true`, submit to last completion (medians)", rows)
    return {"throughput": rows}


def retry(args) -> dict:
    rows = []
    for recovery in (False, True):
        n = args.jobs[0]
        d = Daemon(workdir(), args.cpus)
        try:
            wall, wf = run_spec(d, spec_true(n, fail_once=True, recovery=recovery), "retry")
            span = submit_to_last_completion(d, wf)
            with d.db() as db:
                lat = [
                    r[0] * 1000
                    for r in db.execute(
                        """SELECT a2.start_time - a1.end_time FROM attempts a1 JOIN attempts a2
                       ON a2.job_id = a1.job_id AND a2.attempt_id = 2 WHERE a1.attempt_id = 1
                       AND a1.workflow_id = ?""",
                        (wf,),
                    )
                ]
                done = db.execute("SELECT count(*) FROM jobs WHERE workflow_id = ? AND status = 5", (wf,)).fetchone()[0]
        finally:
            d.stop()
        lat.sort()
        rows.append(
            {
                "recovery_script": recovery,
                "jobs": n,
                "completed": done,
                "jobs_per_s": n / span,
                "retry_latency_median_ms": statistics.median(lat),
                "retry_latency_p99_ms": lat[int(len(lat) * 0.99) - 1],
            }
        )
    print_table("retry path: each job fails once (exit 10), succeeds on attempt 2", rows)
    return {"retry": rows}


def peer(args) -> dict:
    n = args.jobs[0]
    venv = Path(tempfile.gettempdir()) / "torc-bench-snakemake"
    if not (venv / "bin" / "snakemake").exists():
        subprocess.run([PY, "-m", "venv", str(venv)], check=True)
        subprocess.run([venv / "bin" / "pip", "install", "-q", "snakemake"], check=True)
    rows = []
    root = workdir()
    (root / "Snakefile").write_text(f"""
rule all:
    input: expand("out/{{i}}.done", i=range({n}))
rule job:
    output: "out/{{i}}.done"
    shell: "true; touch {{output}}"
""")
    t = time.perf_counter()
    r = subprocess.run(
        [venv / "bin" / "snakemake", "--cores", str(args.cpus), "--quiet", "all"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    snake = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    (root / "torc").mkdir()
    d = Daemon(root / "torc", args.cpus)
    try:
        wall, wf = run_spec(d, spec_true(n), "peer")
    finally:
        d.stop()
    rows.append({"jobs": n, "cpus": args.cpus, "torcctl_run_s": wall, "snakemake_s": snake, "ratio": wall / snake})
    print_table("peer: the same N x `true` through `torcctl run` and Snakemake (wall time)", rows)
    return {"peer": rows}


def scale(args) -> dict:
    """One big workflow: submitted (validated, stored, started), listed and paged, then deleted
    while another workflow is written to and the daemon pinged (the longest wait of each)."""
    n, edges, edge_jobs = args.scale_jobs, args.edges, args.edge_jobs
    fan_in = f"""name: scale
jobs:
  - name: j{{i}}
    command: "true"
    parameters: {{i: "1:{n}"}}
  - name: aggregate
    command: "true"
    parameters: {{i: "1:{n}"}}
    depends_on: ["j{{i}}"]
"""
    # edge_jobs jobs a{k}_{f}; then b{k}_{g} jobs, each depending on every a{k}_{f}: `edges` edges in all
    f_count = 100
    k_count = max(1, edge_jobs // f_count)
    g_count = max(1, edges // edge_jobs)
    many_edges = f"""name: edges
jobs:
  - name: a{{k}}_{{f}}
    command: "true"
    parameters: {{k: "1:{k_count}", f: "1:{f_count}"}}
  - name: b{{k}}_{{g}}
    command: "true"
    parameters: {{k: "1:{k_count}", f: "1:{f_count}", g: "1:{g_count}"}}
    depends_on: ["a{{k}}_{{f}}"]
"""
    rows = []
    for label, text in (("fan-in", fan_in), ("edges", many_edges)):
        d = Daemon(workdir(), 1)
        try:
            rows.append({"variant": label, **_scale_one(d, text)})
        finally:
            d.stop()
    print_table("scale: validate + store + start one big workflow (torcctl submit), read it, delete it", rows)
    return {"scale": rows}


def _scale_one(d: Daemon, text: str) -> dict:
    from torcctl.transport import Transport

    path = d.root / "scale.yaml"
    path.write_text(text)
    t = time.perf_counter()
    r = d.ctl("submit", str(path))
    submit = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    wf = int(r.stdout)
    rpc = Transport(d.socket, timeout=600)
    with d.db() as db:
        jobs = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
        deps = db.execute("SELECT count(*) FROM deps").fetchone()[0]

    def median_ms(fn, runs: int = 5) -> float:
        lat = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            lat.append(time.perf_counter() - t)
        return statistics.median(lat) * 1000

    cli_ms = median_ms(lambda: d.ctl("jobs", "list", str(wf), "--status", "ready", "--limit", "100"))
    ready_ms = median_ms(lambda: rpc.call("jobs.list", {"workflow_id": wf, "status": "ready", "limit": 100}))
    last_page_ms = median_ms(lambda: rpc.call("jobs.list", {"workflow_id": wf, "limit": 100, "offset": jobs - 100}))
    d.ctl("workflows", "cancel", str(wf))
    other_spec = "name: o\njobs:\n  - {name: a, command: 'true'}\n"
    other = rpc.call("workflows.create", {"spec_text": other_spec, "cwd": str(d.root)})["id"]
    stop, worst = threading.Event(), {"ping": 0.0, "write": 0.0}

    def probe(kind: str) -> None:
        conn, i = Transport(d.socket, timeout=600), 0
        while not stop.is_set():
            t = time.perf_counter()
            if kind == "ping":
                conn.call("ping")
            else:
                conn.call("user_data.set", {"workflow_id": other, "name": f"k{i % 10}", "data": i})
            worst[kind] = max(worst[kind], time.perf_counter() - t)
            i += 1
            time.sleep(0.005)

    probes = [threading.Thread(target=probe, args=(k,)) for k in ("ping", "write")]
    for p in probes:
        p.start()
    time.sleep(0.3)
    t = time.perf_counter()
    rpc.call("workflows.delete", {"workflow_id": wf})
    delete = time.perf_counter() - t
    time.sleep(0.3)
    stop.set()
    for p in probes:
        p.join()
    return {
        "jobs": jobs,
        "edges": deps,
        "submit_s": submit,
        "daemon_peak_rss_mb": d.rss_peak_kb() / 1024,
        "cli_list_ready_ms": cli_ms,
        "rpc_list_ready_ms": ready_ms,
        "rpc_last_page_ms": last_page_ms,
        "delete_s": delete,
        "longest_ping_ms": worst["ping"] * 1000,
        "longest_other_write_ms": worst["write"] * 1000,
    }


def client(args) -> dict:
    d = Daemon(workdir(), 1)
    try:
        times, bare = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            d.ctl("workflows", "list")
            times.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run([PY, "-c", "pass"], env=d.env)
            bare.append(time.perf_counter() - t)
    finally:
        d.stop()
    rows = [
        {
            "command": "torcctl workflows list",
            "runs": args.runs,
            "median_ms": statistics.median(times) * 1000,
            "max_ms": max(times) * 1000,
            "python_startup_median_ms": statistics.median(bare) * 1000,
        }
    ]
    print_table("client latency: process start to exit (and `python -c pass` for comparison)", rows)
    return {"client": rows}


async def _emulated_workers(
    socket: str, wf: int, workers: int, cpus: int, jobs: int, rate: float | None = None
) -> float:
    """Workers that take jobs and report them done at their next poll, as fast as the daemon
    answers (or, with `rate`, no faster than that many completions a second in all); seconds
    from the first poll to the last completion."""
    import aiohttp

    done = 0
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket, limit=0)) as http:

        async def call(method: str, params: dict):
            async with http.post(
                "http://torcd/rpc", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            ) as resp:
                reply = await resp.json()
            if "error" in reply:
                raise RuntimeError(reply["error"])
            return reply["result"]

        ids = [
            (await call("workers.register", {"workflow_id": wf, "host": f"w{i}", "cpus": cpus}))["worker_id"]
            for i in range(workers)
        ]

        async def run(wid: int) -> None:
            nonlocal done
            exits: list[dict] = []
            while done < jobs:
                result = await call("workers.poll", {"worker_id": wid, "free_cpus": cpus, "exits": exits})
                done += len(exits)
                exits = [
                    {
                        "job_id": j["job_id"],
                        "run_id": j["run_id"],
                        "attempt_id": j["attempt_id"],
                        "return_code": 0,
                        "end_time": time.time(),
                    }
                    for j in result["jobs"]
                ]
                if not exits:
                    await asyncio.sleep(0.01)
                elif rate:  # report them when the pace allows
                    await asyncio.sleep(max(0.0, t + (done + len(exits)) / rate - time.perf_counter()))

        t = time.perf_counter()
        await asyncio.gather(*(run(w) for w in ids))
        return time.perf_counter() - t


def workers(args) -> dict:
    """workers.poll under load: emulated workers claiming jobs and reporting them done."""
    rows = []
    for n_workers, cpus in ((20, 8), (100, 8), (200, 1)):
        d = Daemon(workdir(), 1, "--listen", "127.0.0.1:0")
        try:
            from torcctl.transport import Transport

            spec = (
                f"name: w\njobs:\n  - {{name: 'j{{i}}', command: 'true', parameters: {{i: '1:{args.worker_jobs}'}}}}\n"
            )
            wf = Transport(d.socket, timeout=120).call(
                "workflows.create", {"spec_text": spec, "cwd": str(d.root), "executor": "slurm"}
            )["id"]
            before = _cpu_seconds(d.proc.pid)
            wall = asyncio.run(_emulated_workers(d.socket, wf, n_workers, cpus, args.worker_jobs))
            cpu = _cpu_seconds(d.proc.pid) - before
        finally:
            d.stop()
        rows.append(
            {
                "workers": n_workers,
                "cpus_each": cpus,
                "jobs": args.worker_jobs,
                "wall_s": wall,
                "completions_per_s": args.worker_jobs / wall,
                "daemon_cpu_ms_per_completion": cpu / args.worker_jobs * 1000,
            }
        )
    print_table("workers.poll: emulated workers claiming jobs and reporting them done", rows)
    return {"workers": rows}


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def monitor(args) -> dict:
    """What sampling costs the daemon: N jobs holding 20 MiB for 10 s each, all at once, with every
    job sampled each second (resource_monitor) and with none sampled; the daemon's CPU time."""
    n, rows = args.monitor_jobs, []
    for sampled in (False, True):
        d = Daemon(workdir(), n)
        try:
            spec = d.root / "spec.yaml"
            spec.write_text(f"""name: monitor
resource_monitor: {{enabled: {str(sampled).lower()}, sample_interval_seconds: 1}}
jobs:
  - name: j{{i}}
    command: "(head -c 20m /dev/zero; sleep 10) | tail >/dev/null"
    parameters: {{i: "1:{n}"}}
""")
            before, t = _cpu_seconds(d.proc.pid), time.perf_counter()
            ran = d.ctl("run", "--quiet", str(spec))
            assert ran.returncode == 0, ran.stdout + ran.stderr
            wall, cpu = time.perf_counter() - t, _cpu_seconds(d.proc.pid) - before
            peaks = [r[0] for r in d.db().execute("SELECT peak_rss_bytes FROM attempts") if r[0]]
        finally:
            d.stop()
        rows.append(
            {
                "jobs": n,
                "sampled": sampled,
                "wall_s": wall,
                "daemon_cpu_s": cpu,
                "daemon_cpu_percent": cpu / wall * 100,
                "peak_mib_median": statistics.median(peaks) / 2**20 if peaks else 0.0,
            }
        )
    extra = rows[1]["daemon_cpu_s"] - rows[0]["daemon_cpu_s"]
    samples = n * 10  # one per job per second, for about 10 s
    rows[1]["ms_per_job_sample"] = extra / samples * 1000
    rows[0]["ms_per_job_sample"] = 0.0
    print_table(f"monitor: daemon CPU with {n} jobs of 10 s, each sampled once a second or not at all", rows)
    return {"monitor": rows}


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    keys = list(rows[0])
    cells = [[f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["throughput", "retry", "peer", "scale", "client", "monitor", "workers", "all"])
    ap.add_argument("--jobs", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--scale-jobs", type=int, default=1_000_000)
    ap.add_argument("--edges", type=int, default=2_000_000)
    ap.add_argument("--edge-jobs", type=int, default=200_000, help="jobs the edges variant of `scale` starts from")
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--monitor-jobs", type=int, default=64, help="jobs running at once in `monitor`")
    ap.add_argument("--worker-jobs", type=int, default=20_000, help="jobs the emulated workers complete in `workers`")
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs per N (medians are reported)")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--dir", help="scratch directory (default: the system's temp dir)")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cpus, Python {platform.python_version()}, {platform.platform()}")
    todo = (
        ["throughput", "retry", "peer", "scale", "client", "monitor", "workers"] if args.what == "all" else [args.what]
    )
    results = {}
    _work.append(Path(tempfile.mkdtemp(prefix="torc-bench-", dir=args.dir)))
    print(f"scratch: {_work[0]} (creating a file there: {file_create_ms(workdir()):.3f} ms of CPU)")
    try:
        for what in todo:
            results.update(globals()[what](args))
    finally:
        shutil.rmtree(_work[0])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
