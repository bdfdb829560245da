"""The file layout of an experiment folder (local or s3://): every name the search writes and analysis reads."""

RECORD_FILE = "mtl_experiment.json"  # core.record.ExperimentRecord
RESULTS_FILE = "results.parquet"  # one row per trial (core.results)
EXTENDED_FILE = "extended_results.parquet"  # the trials of the experiment an `--extend` run adds seeds to
LOOKS_FILE = "seed_looks.json"  # every look of an adaptive-seeds design (search/adaptive.py)
TRIAL_CONFIG_FILE = "trial_config.yaml"  # a trial's resolved TrialConfig, in its folder
CHECKPOINT_MANIFEST = "checkpoints.json"  # what the checkpoint policy kept (search.retention)
SCHEDULER_STATE = "seed_asha_state.json"  # seed-aware ASHA's rungs, read back by `--resume`
POSTHOC_FILE = "posthoc/posthoc.parquet"  # analysis.posthoc's table
ARTIFACTS = (RECORD_FILE, RESULTS_FILE, POSTHOC_FILE, LOOKS_FILE)  # what docs/findings/<exp>/ keeps (no checkpoints)
