"""Start a sandboxed command: join its cgroup, drop privileges, exec. Trusted, tiny.

    python -I -S enter.py [--cgroup PROCS_FILE]... [--user UID:GID] -- COMMAND...

Run by the local runner in place of the command, so that the command's first
process is already in its run's cgroup and already unprivileged: nothing it
forks can start outside either. Standard library only (it runs with -S).
"""

import os
import sys


def main(argv: list[str]) -> None:
    if "--" not in argv:
        sys.exit("usage: enter.py [--cgroup FILE]... [--user UID:GID] -- COMMAND...")
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    user = None
    for flag, value in zip(options[::2], options[1::2], strict=True):
        if flag == "--cgroup":
            with open(value, "w") as procs:
                procs.write(f"{os.getpid()}\n")
        elif flag == "--user":
            user = [int(part) for part in value.split(":")]
        else:
            sys.exit(f"enter.py: unknown option {flag}")
    if user is not None:
        os.setgroups([])
        os.setgid(user[1])
        os.setuid(user[0])
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
