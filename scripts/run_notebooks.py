#!/usr/bin/env python3
"""Execute Rust (evcxr) notebooks headless, in order, and fail loudly on any cell error.

Each notebook runs in a kernel of its own, with the notebook's folder as working directory and
ABT_PROFILE / ABT_RUN_DIR in the environment; the executed copy, outputs and images included, is
saved to <run-dir>/notebooks/. The run stops a notebook at its first failing cell and exits
non-zero if any notebook failed. At the end it writes the run's browsable report,
<run-dir>/report/index.html (the library's `RunReport`, run in one more kernel of the same
kind, whose build is the notebooks'), unless --no-report. The last line printed is
`N passed, N failed` (notebooks). A cell running longer than a minute prints a heartbeat line
every minute. `--warm` only compiles the crate into the kernel's build directory, with progress.

Why not `jupyter nbconvert --execute`: evcxr answers a panicking cell, and a cell whose `?`
returns an `Err`, with status "ok" — it only prints the panic or the error to stderr — so nbconvert
exits 0. This runner uses nbclient (the engine under nbconvert, speaking the same Jupyter protocol
a browser does) cell by cell and judges each cell itself:
  * an `error` output (compile error, kernel error)      -> failed
  * any text on stderr (panic message, `Err` from `?`)   -> failed
  * a dead kernel or a cell running past --timeout       -> failed
Library code therefore reports progress on stdout; stderr in a notebook means failure.

evcxr forwards the child process's stderr from a separate thread and may send a line after the
cell's reply (it is then dropped, or lands on the next cell). So after each cell the runner
executes a barrier, `eprintln!` of a marker: stderr is one ordered pipe, so when the marker
arrives every earlier stderr line has been seen, and whatever came before it belongs to the cell.
"""

from __future__ import annotations

import argparse
import inspect
import os
import queue
import re
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

try:
    import nbformat
    from jupyter_core.utils import run_sync
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
except ImportError as exc:  # pragma: no cover - message for users without the venv
    sys.exit(
        f"error: {exc}. Run `bash scripts/setup.sh` first and use the project's venv "
        "(.venv/bin/python scripts/run_notebooks.py ...)."
    )

BARRIER = "ABT_RUNNER_BARRIER"
BARRIER_TIMEOUT = 120
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


HEARTBEAT = 60


@contextmanager
def heartbeat(label: str, every: float = HEARTBEAT):
    """Print `label ... still running (N min)` every `every` seconds until the block ends, so a
    long cell (the crate's first compile, training) shows that it is alive."""
    done = threading.Event()
    started = time.monotonic()

    def beat():
        while not done.wait(every):
            minutes, seconds = divmod(int(time.monotonic() - started), 60)
            print(f"         {label} still running ({minutes} min {seconds:02d} s)", flush=True)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def plain(text: str) -> str:
    """Text without ANSI colour codes."""
    return ANSI.sub("", text)


def cell_failure(cell) -> str | None:
    """Why an executed code cell failed, or None if it succeeded."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            detail = "\n".join(plain(line) for line in out.get("traceback", []))
            return f"error: {plain(out.get('evalue', ''))}\n{detail}".strip()
    stderr = "".join(
        out.get("text", "")
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stderr"
    )
    if stderr.strip():
        kind = "panicked" if "panicked at" in stderr else "wrote to stderr (an Err returned by `?`, or a warning)"
        return f"{kind}:\n{plain(stderr).strip()}"
    return None


def first_line(cell) -> str:
    """The first non-empty source line of a cell, for naming it in messages."""
    for line in cell.get("source", "").splitlines():
        if line.strip():
            return line.strip()[:80]
    return "<empty>"


def sync(value):
    """The result of a kernel-client call, awaited if it is a coroutine (nbclient's client is async)."""
    if inspect.isawaitable(value):
        async def wait():
            return await value
        return run_sync(wait)()
    return value


def late_stderr(client) -> str:
    """Run the stderr barrier; return stderr text that arrived late for the previous cell."""
    msg_id = sync(client.kc.execute(f'eprintln!("{BARRIER}");', store_history=False))
    late, barrier_seen, idle = [], False, False
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while not (barrier_seen and idle):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"kernel did not answer the stderr barrier in {BARRIER_TIMEOUT} s")
        try:
            msg = sync(client.kc.get_iopub_msg(timeout=remaining))
        except queue.Empty:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content.get("name") == "stderr":
            text = content.get("text", "")
            if BARRIER in text:
                barrier_seen = True
                text = text.replace(BARRIER + "\n", "").replace(BARRIER, "")
            if not barrier_seen and text:
                late.append(text)
        elif kind == "error":
            raise RuntimeError(f"stderr barrier failed: {content.get('evalue')}")
        elif kind == "status" and msg["parent_header"].get("msg_id") == msg_id:
            idle = content.get("execution_state") == "idle"
    try:
        sync(client.kc.get_shell_msg(timeout=10))
    except queue.Empty:
        pass
    return "".join(late)


def renumber(nb) -> None:
    """Number executed cells 1, 2, ... (the barriers used execution counts in between)."""
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or cell.get("execution_count") is None:
            continue
        count += 1
        cell.execution_count = count
        for out in cell.get("outputs", []):
            if "execution_count" in out:
                out["execution_count"] = count


def save_atomic(nb, path: Path) -> None:
    """Write a notebook so that a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    nbformat.write(nb, str(tmp))
    os.replace(tmp, path)


def execute(nb, cwd: Path, env: dict, kernel: str, timeout: int) -> tuple[tuple | None, float]:
    """Run every code cell of `nb` in a fresh kernel, judging each; returns (failure, seconds),
    failure being (cell index or None, reason) for the first failing cell."""
    client = NotebookClient(
        nb,
        kernel_name=kernel,
        timeout=timeout,
        allow_errors=True,
        record_timing=True,
        resources={"metadata": {"path": str(cwd)}},
    )
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    failure = None
    started = time.monotonic()
    try:
        with client.setup_kernel(env=env, cwd=str(cwd)):
            for n, index in enumerate(code_cells, 1):
                cell = nb.cells[index]
                t0 = time.monotonic()
                print(f"   [{n}/{len(code_cells)}] cell {index}: {first_line(cell)}", flush=True)
                try:
                    with heartbeat(f"cell {index}"):
                        client.execute_cell(cell, index)
                except CellTimeoutError:
                    failure = (index, f"timed out after {timeout} s")
                except DeadKernelError as exc:
                    failure = (index, f"kernel died: {exc}")
                else:
                    late = late_stderr(client)
                    if late:
                        cell.outputs.append(nbformat.v4.new_output("stream", name="stderr", text=late))
                    reason = cell_failure(cell)
                    if reason:
                        failure = (index, reason)
                print(f"         {'FAILED' if failure else 'ok'} in {time.monotonic() - t0:.1f} s", flush=True)
                if failure:
                    break
    except Exception as exc:  # kernel could not start, protocol errors
        failure = (None, f"{type(exc).__name__}: {exc}")
    return failure, time.monotonic() - started


def notebook_env(run_dir: Path, profile: str, scale: str) -> dict:
    """The environment a notebook's kernel runs in: the run context as ABT_* variables."""
    env = dict(os.environ)
    env["ABT_PROFILE"] = profile
    env["ABT_RUN_DIR"] = str(run_dir)
    env.pop("ABT_SMOKE", None)
    env["ABT_SCALE"] = scale
    return env


def kernel_of(nb) -> str:
    """The kernel a notebook names in its metadata (default "rust")."""
    return nb.metadata.get("kernelspec", {}).get("name", "rust")


def run_notebook(path: Path, run_dir: Path, profile: str, timeout: int,
                 kernel: str | None = None, scale: str = "full") -> tuple[bool, str]:
    """Execute one notebook; returns (passed, summary line)."""
    nb = nbformat.read(str(path), as_version=4)
    kernel = kernel or kernel_of(nb)
    code_cells = sum(c.cell_type == "code" for c in nb.cells)
    print(f"== {path} ({code_cells} code cells, kernel {kernel!r})", flush=True)
    failure, elapsed = execute(nb, path.parent.resolve(), notebook_env(run_dir, profile, scale),
                               kernel, timeout)
    renumber(nb)
    nb.metadata["abt_runner"] = {
        "status": "failed" if failure else "passed",
        "failed_cell": failure[0] if failure else None,
        "error": failure[1] if failure else None,
        "seconds": round(elapsed, 1),
        "profile": profile,
    }
    out = run_dir / "notebooks" / path.name
    save_atomic(nb, out)
    if failure:
        index, reason = failure
        where = f"cell {index} ({first_line(nb.cells[index])})" if index is not None else "kernel"
        indented = "\n".join("    " + line for line in reason.splitlines())
        return False, f"FAIL {path.name}: {where} after {elapsed:.1f} s -> {out}\n{indented}"
    return True, f"PASS {path.name} in {elapsed:.1f} s -> {out}"


ROOT = Path(__file__).resolve().parent.parent
# What a notebook's first cell does: load the crate, compiling it into the kernel's build
# directory when the sources changed.
DEP_LINE = f":dep agentbench_tuning = {{ path = '{ROOT}' }}"


def run_code(code: str, cwd: Path, env: dict, kernel: str, timeout: int) -> tuple[tuple | None, float]:
    """Run one cell of Rust, after loading the crate, in a fresh kernel; as `execute`."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"{DEP_LINE}\n{code}".rstrip())]
    return execute(nb, cwd, env, kernel, timeout)


def warm(kernel: str, timeout: int) -> tuple[bool, str]:
    """Compile the crate into the kernel's build directory (what a notebook's first cell does),
    with cargo's `Compiling ...` lines from the kernel and a heartbeat on the way, so that the
    first notebook starts at once; returns (ok, line)."""
    print(f"== compiling the crate into the {kernel!r} kernel's build directory (the first time "
          "on a machine: 8-14 min on 2 cores; later: under a minute)", flush=True)
    failure, elapsed = run_code("", ROOT / "notebooks", dict(os.environ), kernel, timeout)
    if failure:
        return False, f"FAIL warm-up after {elapsed:.1f} s: {failure[1]}"
    return True, f"kernel build ready in {elapsed:.1f} s"


def write_report(notebook: Path, run_dir: Path, profile: str, scale: str, timeout: int,
                 kernel: str | None = None) -> tuple[bool, str]:
    """Write the run's browsable report (<run>/report/index.html) with the library's
    `RunReport`, in a kernel like the notebooks' (its build is reused); returns (ok, line)."""
    kernel = kernel or kernel_of(nbformat.read(str(notebook), as_version=4))
    code = (f'let report = agentbench_tuning::report::RunReport::build('
            f'std::path::Path::new(r#"{run_dir}"#))?;\n'
            'println!("{}", report.write()?.display());')
    print("== report", flush=True)
    failure, elapsed = run_code(code, notebook.parent.resolve(),
                                notebook_env(run_dir, profile, scale), kernel, timeout)
    if failure:
        return False, f"FAIL report after {elapsed:.1f} s: {failure[1]}"
    return True, f"report in {elapsed:.1f} s -> {run_dir / 'report' / 'index.html'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run, in this order")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="run directory (default runs/<timestamp> in the current directory)")
    parser.add_argument("--profile", default=os.environ.get("ABT_PROFILE", "tiny"),
                        help="run profile passed to the notebooks as ABT_PROFILE (default tiny)")
    parser.add_argument("--scale", choices=["full", "short", "smoke"],
                        default=os.environ.get("ABT_SCALE") or "full",
                        help="ABT_SCALE for the notebooks: full (the profile's settings), short "
                             "(the main job: fewer steps and tasks), smoke (CI: a few of each)")
    parser.add_argument("--smoke", action="store_true", help="the same as --scale smoke")
    parser.add_argument("--timeout", type=int, default=3600,
                        help="seconds a single cell may run (default 3600)")
    parser.add_argument("--kernel", default=None,
                        help="kernel to use instead of the one the notebook names (default: its own)")
    parser.add_argument("--keep-going", action="store_true",
                        help="run later notebooks after one fails (default: stop)")
    parser.add_argument("--warm", action="store_true",
                        help="only compile the crate into the kernel's build directory (what the "
                             "first cell of the first notebook on a machine would do), showing "
                             "progress; no notebook runs")
    parser.add_argument("--no-report", action="store_true",
                        help="do not write the run's HTML report (<run>/report/) at the end")
    args = parser.parse_args(argv)

    if args.warm:
        ok, line = warm(args.kernel or "rust", args.timeout)
        print(line, flush=True)
        return 0 if ok else 1
    if not args.notebooks:
        parser.error("give the notebooks to run (or --warm)")
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        print(f"error: notebook not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    run_dir = (args.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)

    passed = failed = 0
    summaries = []
    for path in args.notebooks:
        ok, summary = run_notebook(path, run_dir, args.profile, args.timeout, args.kernel,
                                   "smoke" if args.smoke else args.scale)
        print(summary, flush=True)
        summaries.append(summary.splitlines()[0])
        passed += ok
        failed += not ok
        if not ok and not args.keep_going:
            break
    skipped = len(args.notebooks) - passed - failed
    report_ok, report_line = True, "report: not written (--no-report)"
    if not args.no_report:
        report_ok, report_line = write_report(args.notebooks[0], run_dir, args.profile,
                                              "smoke" if args.smoke else args.scale,
                                              args.timeout, args.kernel)
        print(report_line, flush=True)
    print(f"run directory: {run_dir}")
    for s in summaries:
        print(f"  {s}")
    print(f"  {report_line}")
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""), flush=True)
    return 0 if failed == 0 and report_ok else 1


if __name__ == "__main__":
    sys.exit(main())
