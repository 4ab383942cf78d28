"""The experiment store: a DuckDB catalog plus Parquet files of patched outputs."""
