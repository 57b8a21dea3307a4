"""pre-commit hooks that build and check the local packages owning the changed files.

pre-commit runs a hook's file list in parallel chunks, so two chunks may build one package at the
same time: every build goes through safe-build, which builds from a private snapshot.
"""
