"""One adapter per outside thing: pydicom, requests, watchdog, systemd, SQLite, the filesystem
and worker processes. Each turns its library's ways into the core's values and typed errors."""
