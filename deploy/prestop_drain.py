"""preStop hook of the serving pods: stop taking new work, then wait for the requests in flight.

Kubernetes runs this before it sends SIGTERM. On SIGTERM `serve run` exits and shuts its Ray
down at once, so without this hook every request still running in the pod is cut. Steps:

1. sleep ``--settle-s`` seconds: the pod is already out of the Service's endpoints (it is
   terminating), and kube-proxy / ingress controllers need a few seconds to stop sending to it;
2. wait until no client connection to the HTTP port is open (read from /proc/net/tcp*, the pod's
   network namespace), at most ``--timeout-s`` seconds. The proxy answers or times out every
   request within ``request_timeout_s`` and closes idle keep-alive connections after
   ``keep_alive_timeout_s``, so the timeout is their sum.

Only the standard library: it runs inside the serving image, next to Ray.
"""

import argparse
import sys
import time
from pathlib import Path

ESTABLISHED = "01"  # TCP state code in /proc/net/tcp
TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def open_connections(port: int, tables: tuple[str, ...] = TABLES) -> int:
    """Established TCP connections whose local end is ``port`` (clients talking to the server)."""
    count = 0
    for table in tables:
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) < 4:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == ESTABLISHED:
                count += 1
    return count


def drain(port: int, settle_s: float, timeout_s: float, poll_s: float = 1.0) -> bool:
    """Sleep ``settle_s``, then wait up to ``timeout_s`` for two idle readings in a row; True if drained."""
    time.sleep(settle_s)
    deadline = time.monotonic() + timeout_s
    idle_readings = 0
    while time.monotonic() < deadline:
        open_now = open_connections(port)
        idle_readings = idle_readings + 1 if open_now == 0 else 0
        if idle_readings >= 2:  # two in a row: a kubelet probe's short connection does not count
            return True
        time.sleep(poll_s)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="Serve's HTTP port")
    parser.add_argument("--settle-s", type=float, default=10.0, help="seconds for endpoints to drop the pod")
    parser.add_argument("--timeout-s", type=float, default=125.0,
                        help="longest wait for open connections: request_timeout_s + keep_alive_timeout_s")
    args = parser.parse_args(argv)
    drained = drain(args.port, args.settle_s, args.timeout_s)
    print(f"prestop_drain: port {args.port} {'drained' if drained else 'still busy after the timeout'}",
          file=sys.stderr)
    return 0  # a non-zero exit would only add a FailedPreStopHook event; SIGTERM follows either way


if __name__ == "__main__":
    sys.exit(main())
