"""Ray Tune glue: experiment specs -> trials, the trainable, schedulers, searchers, storage, callbacks."""
