"""Run a command at a lower CPU priority: ``python -m celeste.devserver.niceness N command ...``.

``nice -n N`` alone does not lower a process against one in another session wherever the kernel
schedules by autogroup (``/proc/sys/kernel/sched_autogroup_enabled``, on by default in many
distributions): CPU time is shared between sessions (autogroups) first, and a niceness counts only
against the processes of the same session. ``runall`` starts each of its processes in a session
of its own, so a worker at ``nice -n 10`` still took as much CPU as the web under contention
(measured: two busy loops on one core, nice 0 and nice 19 in two sessions, got 1.42 and 1.40 s;
with the autogroup's niceness set too, 1.93 and 0.07 s). This sets both, the process's niceness
and its session's autogroup's (children, e.g. Celery's pool, inherit both), then runs the command
in place of itself.
"""

import os
import sys

AUTOGROUP = "/proc/self/autogroup"


def lower_priority(niceness: int) -> None:
    os.nice(niceness)
    try:
        with open(AUTOGROUP, "w") as autogroup:
            autogroup.write(str(niceness))
    except OSError:  # no autogroup scheduling here (or not Linux): the niceness alone counts
        pass


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[0].lstrip("-").isdigit():
        sys.exit("usage: python -m celeste.devserver.niceness N command [args ...]")
    lower_priority(int(argv[0]))
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
