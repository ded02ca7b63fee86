"""The command-line side of the bigger ``posebh`` sub-commands (train, reproduce, regression):
their flags and the mapping of those flags onto the library's functions.  Only
:mod:`posebh.cli` imports these modules; the parser itself is built there."""
