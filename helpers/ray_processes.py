"""Find and stop the Ray processes that this Python process started (used by ``helpers.serving``).

Ray starts its GCS server, raylet and workers as children of the process that called
``ray.init``. They are recognised here by their command lines, so that a notebook can prove
that it left nothing running and can end a straggler that ignored Ray's own shutdown.
"""

from __future__ import annotations

import re
import time

_RAY_PROCESS = re.compile(r"ray::|[/\\]ray[/\\]|raylet|gcs_server")


def ray_processes() -> list:
    """This process's descendants that belong to Ray (raylet, GCS, workers, ...)."""
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            text = " ".join(child.cmdline()) + " " + child.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if _RAY_PROCESS.search(text):
            found.append(child)
    return found


def wait_for_no_ray_processes(timeout_s: float = 30.0) -> int:
    """Wait until no Ray process started from here is alive; return how many are still left."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = [proc for proc in ray_processes() if proc.is_running() and proc.status() != "zombie"]
        if not left or time.monotonic() > deadline:
            return len(left)
        time.sleep(0.2)


def stop_own_ray_processes(timeout_s: float = 10.0) -> None:
    """Terminate (then kill) the Ray processes this process started, by pid."""
    import psutil

    own = ray_processes()
    for proc in own:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(own, timeout=timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def process_role(command_line: str) -> str:
    """What a Ray process does, from its command line (Ray names its workers ``ray::<Actor>``)."""
    if "ServeReplica" in command_line:
        return "replicas"
    if "ProxyActor" in command_line:
        return "Serve proxy"
    if "ServeController" in command_line:
        return "Serve controller"
    return "other Ray processes"


def cpu_seconds_by_process() -> dict:
    """``{pid: (role, cpu seconds so far)}`` for this process (role ``load client``) and its Ray processes."""
    import psutil

    def used(proc) -> float:
        times = proc.cpu_times()
        return times.user + times.system

    found = {}
    me = psutil.Process()
    found[me.pid] = ("load client", used(me))
    for proc in ray_processes():
        try:
            found[proc.pid] = (process_role(" ".join(proc.cmdline())), used(proc))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found
