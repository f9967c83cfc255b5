"""The ``oodflow`` command line: parse, call the core, print."""
