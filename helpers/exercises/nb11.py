"""Exercise checks for notebook 11 (serving and load balancing)."""
from __future__ import annotations

import math

from ._common import close, need_answer, verdict


def check_11_1(answer, replicas: int, seconds_per_request: float) -> bool:
    """Most requests per second that ``replicas`` replicas can answer, one request at a time each."""
    if need_answer(answer, "Write your answer in requests per second, e.g. check_11_1(3.5, replicas, service_s)."):
        return False
    expected = replicas / seconds_per_request
    return verdict(close(answer, expected, 0.02),
                   f"Each replica finishes 1 / {seconds_per_request:.2f} s = {1 / seconds_per_request:.2f} requests/s; "
                   f"{replicas} replicas side by side: {expected:.2f} requests/s. Above that, queues only grow.",
                   "A replica that works on one request at a time finishes 1 / (seconds per request) of them each "
                   "second; replicas work side by side, so multiply by their number.")


def check_11_2(answer, replicas: int, max_ongoing_requests: int, max_queued_requests: int) -> bool:
    """How many requests one proxy admits at once (in progress + waiting) before it sheds with 503."""
    if need_answer(answer, "Write your answer as a whole number of requests."):
        return False
    expected = replicas * max_ongoing_requests + max_queued_requests
    return verdict(isinstance(answer, int) and not isinstance(answer, bool) and answer == expected,
                   f"{replicas} x {max_ongoing_requests} in progress + {max_queued_requests} waiting = {expected}; "
                   f"request number {expected + 1} gets a 503 at once.",
                   "Count the requests being worked on (replicas x max_ongoing_requests) and add the ones allowed "
                   "to wait in the proxy's queue (max_queued_requests).")


def check_11_3(answer, current_pods: int, current_cpu_percent: float, target_cpu_percent: float) -> bool:
    """Pods the Kubernetes HorizontalPodAutoscaler asks for: ceil(pods x current / target)."""
    if need_answer(answer, "Write your answer as a whole number of pods."):
        return False
    expected = math.ceil(current_pods * current_cpu_percent / target_cpu_percent)
    return verdict(isinstance(answer, int) and not isinstance(answer, bool) and answer == expected,
                   f"ceil({current_pods} x {current_cpu_percent:g} / {target_cpu_percent:g}) = {expected} pods "
                   f"(before the min/max bounds and the scale-up policy).",
                   "The HPA scales the pod count by how far the measured average is from the target: "
                   "pods x current utilisation / target utilisation, rounded up.")
