"""The daemon: its loop and the steps it takes with each session."""
