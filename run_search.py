"""mtl-tune entry point: `python run_search.py ablations/task_weights.yaml [options]` (see --help)."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
