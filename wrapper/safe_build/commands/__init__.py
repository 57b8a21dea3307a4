"""One module per safe-build command."""
