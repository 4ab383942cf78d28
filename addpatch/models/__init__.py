"""Loading, listing and training the language models addpatch patches."""
