"""Ray for our commands: join RAY_ADDRESS's cluster or start a private local instance, printing only our lines."""

from __future__ import annotations

import os


def local_ray_env() -> None:
    """Before Ray is imported: a local instance binds to loopback only and writes no auth-token file
    (which would switch a later `ray start --head` to token auth), docs/platform.md "Ray". And, for this driver
    and the processes it starts, PyTorch's huge-page setting of the CPU path (ops.cpu_process_env; torch reads it
    at its first large allocation, so it takes effect here too; the training workers get all of
    ops.cpu_process_env through their runtime_env)."""
    import ops  # (torch: the commands that call this import it anyway)

    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", ops.cpu_process_env()["THP_MEM_ALLOC_ENABLE"])
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def init_ray(dashboard: bool = True) -> None:
    """Join RAY_ADDRESS's cluster, or start a private local instance, with log_to_driver=False: the user reads
    our lines (the run, one line per tick, the summary), and Ray's own worker, controller and Ray Data output
    stays in Ray's log files (`fit` relays the tick lines from the Train controller itself).

    dashboard: start the local instance with its dashboard on 127.0.0.1 -- it serves the state API through which
    Ray Train's placement-group cleaner watches the Train controller (without it the cleaner warns every few
    seconds, and the CPUs of a Train run whose controller was killed, e.g. a trial stopped early by Tune, are
    never released)."""
    import ray
    import ray.data

    if not ray.is_initialized():
        # RAY_ADDRESS set (e.g. by `ray job submit`): join that cluster; else a private local instance,
        # never a stranger's cluster on a shared machine.
        local = not os.environ.get("RAY_ADDRESS")
        extra = {"dashboard_host": "127.0.0.1"} if dashboard and local else {}
        try:
            ray.init(address="local" if local else None, include_dashboard=dashboard and local,
                     configure_logging=False, log_to_driver=False, **extra)
        except Exception as e:
            if "timed out during startup" in str(e):  # Ray gives a local raylet a fixed 30 s to register
                raise SystemExit("error: Ray could not start a local node within 30 s (this machine is too "
                                 "busy); run the command again, or start one with `ray start --head` and set "
                                 "RAY_ADDRESS=auto") from None
            raise
    ray.data.DataContext.get_current().enable_progress_bars = False  # one progress line per tick instead
    ray.data.DataContext.get_current().print_on_execution_start = False
