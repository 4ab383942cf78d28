"""Defaults that the CLI shows before anything heavy is imported."""

STORE_ENV = "ADDPATCH_STORE"
DEFAULT_STORE = "addpatch-store"
DEFAULT_MODEL = "tiny-adder-digits"
