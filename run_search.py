"""mtl-tune entry point (interim): prepares the embedded synthetic dataset.

The search layer (YAML spec -> Ray Tune trials) lands in a following commit; until then this
generates the default synthetic dataset the searches will train on.
"""

from __future__ import annotations

import sys

from mtl.data.cache import ensure_synthetic


def main(argv: list[str]) -> None:
    root = ensure_synthetic({"train": 96, "val": 32, "test": 32}, (64, 128), seed=0, progress=True)
    print(f"synthetic dataset ready at {root} (spec {argv[0] if argv else '-'}: search layer pending)")


if __name__ == "__main__":
    main(sys.argv[1:])
