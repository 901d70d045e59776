"""``python -m forgeml.context._main WORKDIR``: the process a compute context starts."""

import sys

from forgeml.context._child import child_main

if __name__ == "__main__":
    child_main(sys.argv[1])
