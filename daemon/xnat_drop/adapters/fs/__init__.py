"""The drop tree on disk: never following a link, never editing a session."""
