"""What search/ and analysis/ both need: the storage and its file layout, the typed experiment record, the saved
results. Below both; imports neither (import-linter contracts in pyproject.toml)."""
