"""The ai2text application: the command line and the wiring of roles into processes.

This is the composition root. It is the only package that imports ``pipeline``,
``workers`` and ``gateway`` together; the three never import this one.
"""
