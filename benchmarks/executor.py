"""torcctl.Executor.map over trivial calls, against ProcessPoolExecutor.map and Parsl's HTEX.

    python benchmarks/executor.py --calls 1000 --repeat 3 [--parsl-python /path/to/venv/bin/python] [--failing]

Each run is timed from the first submit to the last result, with the daemon (and Parsl's
interchange and workers) already started; runs of each contender alternate. Parsl runs in its
own interpreter (`--parsl-python`, default: this one if it imports parsl), since it is no
dependency of ours. Prints calls/s (median, min-max) and each ratio to Parsl's median.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import operator
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PARSL_RUN = textwrap.dedent(
    """
    import sys, time, json
    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider
    calls, repeat, workers, run_dir = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    config = Config(
        executors=[HighThroughputExecutor(label="htex", max_workers_per_node=workers,
                                          provider=LocalProvider(init_blocks=1, max_blocks=1))],
        run_dir=run_dir,
    )
    parsl.load(config)

    @parsl.python_app
    def square(x):
        return x * x

    square(0).result()  # workers up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        results = [f.result() for f in [square(i) for i in range(calls)]]
        times.append(time.perf_counter() - start)
        assert results == [i * i for i in range(calls)]
    parsl.dfk().cleanup()
    print(json.dumps(times))
    """
)


def square(x: int) -> int:
    return x * x


def refuse(x: int) -> int:
    raise ValueError(x)


def time_process_pool(calls: int, workers: int) -> float:
    with cf.ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(operator.mul, [0], [0]))  # workers up
        start = time.perf_counter()
        results = list(pool.map(operator.mul, range(calls), range(calls)))
        elapsed = time.perf_counter() - start
    assert results == [i * i for i in range(calls)]
    return elapsed


def time_torc(client, calls: int, chunksize: int, directory: str) -> float:
    from torcctl import Executor

    with Executor(client=client, directory=directory) as ex:
        start = time.perf_counter()
        results = list(ex.map(operator.mul, range(calls), range(calls), chunksize=chunksize))
        elapsed = time.perf_counter() - start
    assert results == [i * i for i in range(calls)]
    return elapsed


def time_torc_failing(client, calls: int, directory: str) -> float:
    """Every call raises: until each future holds its exception (the cost of following failures)."""
    from torcctl import Executor

    with Executor(client=client, directory=directory) as ex:
        start = time.perf_counter()
        futures = [ex.submit(refuse, i) for i in range(calls)]
        cf.wait(futures)
        elapsed = time.perf_counter() - start
    assert all(isinstance(f.exception(), ValueError) for f in futures)
    return elapsed


def parsl_times(python: str, calls: int, repeat: int, workers: int, run_dir: str) -> list[float] | None:
    out = subprocess.run(
        [python, "-c", PARSL_RUN, str(calls), str(repeat), str(workers), run_dir],
        capture_output=True,
        text=True,
        timeout=1800,
        # HTEX starts its interchange as a script of its own environment
        env={**os.environ, "PATH": f"{os.path.dirname(python)}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    if out.returncode != 0:
        print(f"parsl did not run: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return [float(t) for t in json.loads(out.stdout.strip().splitlines()[-1])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--chunksize", type=int, default=50, help="the chunked torc run's chunk size")
    ap.add_argument("--parsl-python", default=None, help="an interpreter with parsl installed")
    ap.add_argument("--dir", default=None, help="where the daemon's state and the call files go")
    ap.add_argument("--failing", action="store_true", help="also time calls that all raise, one job each")
    args = ap.parse_args()
    from torcctl import Client

    work = tempfile.mkdtemp(prefix="torc-exec-bench-", dir=args.dir)
    os.chdir(work)
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torcd",
            "--socket",
            f"{work}/d.sock",
            "--state-dir",
            f"{work}/state",
            "--max-parallel-jobs",
            str(args.workers),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = Client(f"{work}/d.sock", autostart=False)
    while True:
        try:
            client.ping()
            break
        except Exception:
            time.sleep(0.05)
    times: dict[str, list[float]] = {"torc": [], f"torc chunksize={args.chunksize}": [], "ProcessPoolExecutor": []}
    try:
        for r in range(args.repeat):
            times["torc"].append(time_torc(client, args.calls, 1, f"{work}/calls-{r}"))
            times[f"torc chunksize={args.chunksize}"].append(
                time_torc(client, args.calls, args.chunksize, f"{work}/chunks-{r}")
            )
            times["ProcessPoolExecutor"].append(time_process_pool(args.calls, args.workers))
            if args.failing:
                times.setdefault("torc, every call raising", []).append(
                    time_torc_failing(client, args.calls, f"{work}/failing-{r}")
                )
    finally:
        daemon.terminate()
        daemon.wait()
    python = args.parsl_python or (sys.executable if _has_parsl() else None)
    if python:
        found = parsl_times(python, args.calls, args.repeat, args.workers, f"{work}/parsl")
        if found:
            times["Parsl HTEX python_app"] = found
    shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(times["Parsl HTEX python_app"]) if "Parsl HTEX python_app" in times else None
    print(f"{args.calls} trivial calls, {args.workers} workers, medians of {args.repeat}")
    print(f"{'contender':32} {'calls/s':>10} {'range':>20} {'time vs Parsl':>14}")
    for name, ts in times.items():
        rate = args.calls / statistics.median(ts)
        spread = f"{args.calls / max(ts):.0f}-{args.calls / min(ts):.0f}"
        ratio = f"{statistics.median(ts) / base:.2f}x" if base else "-"
        print(f"{name:32} {rate:10.1f} {spread:>20} {ratio:>14}")
    return 0


def _has_parsl() -> bool:
    try:
        import parsl  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
