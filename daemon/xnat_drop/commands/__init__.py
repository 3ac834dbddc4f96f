"""The command line: `xnat-drop` and one module per subcommand."""
