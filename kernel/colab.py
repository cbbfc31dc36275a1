"""Colab helpers: install Rust and the evcxr kernel on a Colab VM, or run a Rust notebook headless
from a Python notebook and show its outputs (charts included).

Used from the one-cell bootstrap in the README:

    import sys; sys.path.insert(0, "/content/agentbench-tuning/kernel")
    import colab; colab.bootstrap()

`bootstrap()` installs Rust (rustup, minimal profile) if it is missing, the notebook engine and the
evcxr kernel through `scripts/setup.sh`, registers the kernel "rust" so that it starts in the
checkout's notebooks/ folder (the notebooks load the crate by the relative path ".."), fetches
the default model, and compiles the crate into the kernel's build directory with its progress
shown (scripts/run_notebooks.py --warm), so that no notebook cell sits silent through it. On a GPU VM the kernel builds the crate for CUDA (`setup_command`): the notebooks
themselves are never rewritten. A notebook whose metadata says `kernelspec.name = "rust"` (all of
this project's do) then runs on the Rust kernel once Colab reconnects.

`run_headless(name)` is the fallback that needs no kernel switch: from a Python notebook it runs
`notebooks/<name>` with scripts/run_notebooks.py and displays the executed copy's markdown, text,
tables and SVG charts inline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARGO_BIN = Path.home() / ".cargo" / "bin"


def _sh(cmd: list[str] | str, **kw) -> None:
    print("$", cmd if isinstance(cmd, str) else " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, shell=isinstance(cmd, str), **kw)


def _stream(cmd: list[str]) -> None:
    """Run `cmd`, printing its output line by line as it comes (so a notebook cell shows it)."""
    print("$", " ".join(cmd), flush=True)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)


def has_gpu() -> bool:
    """Whether an NVIDIA GPU is visible (nvidia-smi lists one)."""
    if shutil.which("nvidia-smi") is None:
        return False
    out = subprocess.run(["nvidia-smi", "-L"], text=True, capture_output=True)
    return out.returncode == 0 and "GPU" in out.stdout


def setup_command(cuda: bool | None = None, env: dict[str, str] | None = None) -> list[str]:
    """The scripts/setup.sh call of `bootstrap()`: kernels start in notebooks/, with `env` set in
    every kernel, and on a GPU VM (or with cuda=True) the kernel builds the crate for CUDA. No
    notebook is rewritten: the kernel's cargo gets `--cfg abt_cuda`, which turns on candle's CUDA
    backend (see kernel/install.sh), so any copy of a notebook builds for the GPU."""
    if cuda is None:
        cuda = has_gpu()
    command = ["bash", str(ROOT / "scripts/setup.sh"), "--cwd", str(ROOT / "notebooks")]
    for name, value in sorted((env or {}).items()):
        command += ["--env", f"{name}={value}"]
    return command + (["--cuda"] if cuda else [])


def bootstrap(profile: str | None = None, cuda: bool | None = None, run_dir: str | None = None,
              hf_home: str | None = None) -> None:
    """Install Rust, the notebook engine and the Rust kernel (the CUDA build on a GPU VM, or with
    cuda=True); fetch the default model.

    `profile` and `run_dir` become every Rust kernel's ABT_PROFILE and ABT_RUN_DIR (and this
    process's, for `run_headless`); `hf_home` its HF_HOME, where models downloaded from the hub
    are kept: a folder on Drive (after `drive.mount`) keeps them across VM resets."""
    os.environ["PATH"] = f"{CARGO_BIN}:{os.environ['PATH']}"
    if shutil.which("cargo") is None:
        _sh("curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal")
    env = {name: value for name, value in
           (("ABT_PROFILE", profile), ("ABT_RUN_DIR", run_dir), ("HF_HOME", hf_home)) if value}
    os.environ.update(env)
    command = setup_command(cuda, env)
    _sh(command)
    _sh(["bash", str(ROOT / "scripts/fetch_default_model.sh")])
    if "--cuda" in command:
        print("GPU found: the Rust kernel builds the crate for CUDA", flush=True)
    # The crate's first compile in the kernel, here where its progress shows, rather than
    # silently in a notebook's first cell.
    _stream([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "scripts/run_notebooks.py"),
             "--warm"])
    print(
        "\nReady. Two ways to run a notebook of this project:\n"
        f"  1. On the Rust kernel: open {ROOT}/notebooks/<name>.ipynb in Colab (upload it, or open it\n"
        "     from GitHub); its metadata names the kernel 'rust', which Colab now finds on this VM.\n"
        "     If it still starts a Python kernel, use Runtime > Restart session (not 'delete\n"
        "     runtime', which wipes this VM). The crate is compiled (above): a notebook's first\n"
        "     cell loads it in about half a minute.\n"
        "  2. Headless, from this Python notebook:  colab.run_headless('00_setup.ipynb')\n"
    )


def run_headless(name: str, profile: str | None = None, run_dir: str | None = None,
                 scale: str = "full") -> Path:
    """Run notebooks/<name> on the Rust kernel headless, show its outputs, return the copy's path.

    The profile defaults to ABT_PROFILE (else tiny) and the run directory to ABT_RUN_DIR (else
    runs/colab), so the notebooks of one run share their phases' outputs."""
    profile = profile or os.environ.get("ABT_PROFILE") or "tiny"
    run_dir = Path(run_dir or os.environ.get("ABT_RUN_DIR") or ROOT / "runs" / "colab")
    python = ROOT / ".venv" / "bin" / "python"
    result = subprocess.run(
        [str(python), str(ROOT / "scripts/run_notebooks.py"), "--run-dir", str(run_dir),
         "--profile", profile, "--scale", scale, str(ROOT / "notebooks" / name)],
        text=True, capture_output=True,
    )
    print(result.stdout[-4000:], result.stderr[-4000:], sep="")
    executed = run_dir / "notebooks" / name
    if executed.exists():
        show(executed)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed; the executed copy is {executed}")
    return executed


def show(executed: Path) -> None:
    """Display an executed notebook's markdown and outputs with IPython (or print them)."""
    try:
        from IPython.display import HTML, SVG, Markdown, display
    except ImportError:  # plain Python: print what can be printed
        HTML = SVG = Markdown = lambda x: x  # noqa: E731
        display = print
    nb = json.loads(Path(executed).read_text())
    for cell in nb["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "markdown":
            display(Markdown(source))
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = lambda v: "".join(v) if isinstance(v, list) else v  # noqa: E731
            if "image/svg+xml" in data:
                display(SVG(text(data["image/svg+xml"])))
            elif "text/html" in data:
                display(HTML(text(data["text/html"])))
            elif "text/plain" in data:
                print(text(data["text/plain"]))
            elif out.get("output_type") == "stream":
                print(text(out.get("text", "")), end="")
            elif out.get("output_type") == "error":
                print("\n".join(out.get("traceback", [])))
