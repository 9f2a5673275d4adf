"""`python tests/hosts.py HOST -- COMMAND...`: run COMMAND as if on another machine named HOST.

Started under `unshare --uts` (a UTS namespace of its own, so setting the host name changes nothing
outside it), optionally with `--time --monotonic OFFSET` (its monotonic clock shifted) and COMMAND
under `faketime` (its wall clock shifted): a real second host, as far as spoold can tell, on one machine.
"""

from __future__ import annotations

import os
import socket
import sys


def main() -> None:
    host, separator, *command = sys.argv[1:]
    assert separator == "--" and command, __doc__
    socket.sethostname(host)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
