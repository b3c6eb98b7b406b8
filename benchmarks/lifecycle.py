"""The lifecycle benchmark: ``python benchmarks/lifecycle.py --mode capacity --jobs 20000``.

The same command as ``pandamq bench``; the broker and database URLs come from
the usual settings (``PANDAMQ_*`` variables, or ``PANDAMQ_CONFIG``).
"""

import sys

from cli.main import pandamq

if __name__ == "__main__":
    pandamq(["bench", *sys.argv[1:]], prog_name="benchmarks/lifecycle.py")
