"""The command-line programs: each module parses its arguments and calls the library (``main()``).

They run as ``python scripts/<name>.py`` from a checkout (thin wrappers) or as the console commands a
``pip install`` creates (``ee-rl-sweep``, ``ee-rl-train``, ...; see ``pyproject.toml``).
"""
