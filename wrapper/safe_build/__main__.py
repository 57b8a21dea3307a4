from safe_build.cli import entrypoint

entrypoint()
