"""Fault injection for tests, from outside the product: Ray runs `oom_in_greedy_trials` in each worker process as
it starts (runtime_env's public `worker_process_setup_hook`), and it makes the `greedy` row's trials run out of
memory at once, as a too-large model on a small GPU would."""

from __future__ import annotations

import torch

OOM_VARIANT = "greedy"


def oom_in_greedy_trials() -> None:
    import search.trainable

    real = search.trainable._train_or_resume

    def train_or_oom(cfg, report, variant: str, *args, **kwargs):
        if variant == OOM_VARIANT:
            raise torch.OutOfMemoryError("injected by tests/faultinject.py: tried to allocate 2.00 GiB")
        return real(cfg, report, variant, *args, **kwargs)

    search.trainable._train_or_resume = train_or_oom
