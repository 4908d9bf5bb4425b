"""Per-key state: tables in SQLite, one store per task, mirrored to changelog topics."""
