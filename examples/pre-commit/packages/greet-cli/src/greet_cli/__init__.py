"""Greetings on the command line."""
