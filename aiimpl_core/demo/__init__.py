"""``aiimpl demo``: the whole loop on one machine with no external account.

A sandbox tracker, a sandbox GitHub and a local runner that executes ``aiimpl session run`` with a
scripted stand-in agent against a local git repository — each clearly labelled as a sandbox.
"""
