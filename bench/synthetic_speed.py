"""Generation speed of the ray-cast synthetic dataset (images/s, end to end: render + PNG + stats).

    python -m bench.synthetic_speed [--images 200] [--sizes 128x256,256x512] [--workers 1,2]

Prints a table with one row per size and the speed-up of each worker count over one worker.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from tabulate import tabulate

from mtl.data.synthetic import generate, parse_size


def images_per_second(size: tuple[int, int], images: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        generate(root, {"train": images}, size, seed=123, workers=workers, progress=False)
        return images / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.synthetic_speed",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--sizes", default="128x256,256x512")
    p.add_argument("--workers", default="1,2")
    a = p.parse_args(argv)
    workers = [int(w) for w in a.workers.split(",")]
    rows = []
    for text in a.sizes.split(","):
        size = parse_size(text)
        speeds = [images_per_second(size, a.images, w) for w in workers]
        rows.append([text, *(f"{s:.1f}" for s in speeds), *(f"{s / speeds[0]:.2f}x" for s in speeds[1:])])
    headers = ["size", *(f"img/s ({w} worker{'s' * (w > 1)})" for w in workers),
               *(f"ratio {w}/{workers[0]}" for w in workers[1:])]
    print(tabulate(rows, headers=headers))


if __name__ == "__main__":
    main()
