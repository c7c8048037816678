"""The ``stackreflex`` command line: thin commands that parse, call one function, render."""
