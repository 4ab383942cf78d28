"""Tools for the documentation in `docs/`: the generated reference pages (`generate`) and the
checked console examples (`examples`)."""
