"""One function per DVC stage: read the stage's inputs, call the compute modules, write outputs.

The scripts in ``stages/`` only parse argv and call one of these; everything here is importable
and testable without DVC.
"""
