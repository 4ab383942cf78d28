"""Errors raised by the addpatch library.

The CLI turns every `AddpatchError` into one line, `Error: <message>`, and exit code 1.
Each message says what went wrong and how to fix it.
"""


class AddpatchError(Exception):
    """Base class of every error addpatch raises on purpose."""


class BadInput(AddpatchError):
    """An argument or parameter the user gave is out of range or malformed."""


class ModelNotFound(AddpatchError):
    """A model name, path or Hugging Face id could not be resolved locally."""


class StoreError(AddpatchError):
    """The store is missing, unreadable, locked or inconsistent."""


class SchemaMismatch(StoreError):
    """The store's catalog is at another schema revision than this addpatch expects."""


class NothingToDo(AddpatchError):
    """A step found no input to work on (e.g. no example survived filtering)."""
