"""Run model-written Python functions on test inputs in a separate, limited process.

What is guaranteed (Linux and macOS; Windows gets only the timeout and the audit hook):
- a fresh `python -I` (isolated: no user site-packages, no PYTHON* variables, no cwd on sys.path) in an
  empty temporary directory that is deleted afterwards, with an empty environment;
- resource limits set before the code starts: CPU seconds, address space, no file may grow past 0 bytes
  (RLIMIT_FSIZE), few open files; and a wall-clock timeout after which the process is killed;
- before the model's code is even compiled, an audit hook (PEP 578; it cannot be removed from Python code)
  refuses: opening files for writing, sockets, subprocesses, exec/fork/kill/system, file deletion and
  renames, and loading ctypes/native libraries. So no network, no file writes, no children.
This protects against what a small model's code does by accident (loops, huge lists, os.remove). It is not a
security boundary against code written to escape it (a container or VM is).
"""

import json
import os
import subprocess
import sys
import tempfile

TIMEOUT_S = 5.0
CPU_S = 3
MEMORY_BYTES = 1 << 30

RUNNER = r'''
import json, sys
request = json.loads(sys.stdin.read())
BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.fork", "os.kill",
           "os.remove", "os.unlink", "os.rename", "os.rmdir", "os.mkdir", "os.truncate", "shutil.",
           "ctypes.", "os.chmod", "os.symlink", "os.link", "pty.", "sys.addaudithook", "webbrowser.")
def hook(event, args):
    if event.startswith(BLOCKED):
        raise PermissionError(f"not allowed in the eval sandbox: {event}")
    if event == "open":
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & 0o3 or (flags or 0) & 0o100:
            raise PermissionError("not allowed in the eval sandbox: writing files")
    if event == "import" and args[0] in ("ctypes", "_ctypes", "socket", "_socket", "subprocess"):
        raise PermissionError(f"not allowed in the eval sandbox: import {args[0]}")
sys.addaudithook(hook)
results = []
try:
    namespace = {"__name__": "candidate"}
    exec(compile(request["code"], "<model>", "exec"), namespace)
    fn = namespace[request["entry"]]
    for args in request["inputs"]:
        try:
            results.append(["ok", repr(fn(*args))])
        except BaseException as e:
            results.append(["error", type(e).__name__])
except BaseException as e:
    results = [["error", type(e).__name__]] * len(request["inputs"])
sys.stdout.write(json.dumps(results))
'''


def limits() -> None:  # runs in the child before exec
    import resource
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_S, CPU_S + 1))  # SIGXCPU first; SIGKILL a second later
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    os.setsid()  # its own process group, so a timeout kills everything it started


def run_function(code: str, entry: str, inputs: list[list]) -> list[tuple[str, str]]:
    """Call entry(*args) for each args in inputs; per input ('ok', repr of the result) or ('error', kind).
    The whole run fails with ('error', 'Timeout') when it exceeds TIMEOUT_S."""
    request = json.dumps({"code": code, "entry": entry, "inputs": inputs})
    with tempfile.TemporaryDirectory(prefix="nanophi-sandbox-") as cwd:
        try:
            proc = subprocess.run([sys.executable, "-I", "-c", RUNNER], input=request, capture_output=True,
                                  text=True, cwd=cwd, env={}, timeout=TIMEOUT_S,
                                  preexec_fn=limits if os.name == "posix" else None)
        except subprocess.TimeoutExpired:
            return [("error", "Timeout")] * len(inputs)
    try:
        return [tuple(r) for r in json.loads(proc.stdout)]
    except ValueError:  # killed by a limit (CPU, memory) before it could answer
        return [("error", f"exit {proc.returncode}")] * len(inputs)
