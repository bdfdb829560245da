"""The statistics of the platform: paired differences, fixed-n and group-sequential tests, Holm, power planning.
Pure numpy / scipy / pandas: below search/ and analysis/, imports neither (import-linter contracts)."""
