"""The notification channels: e-mail (smtplib) and a webhook (urllib), their secrets, and the
owner of a session folder. Each send either returns (the server accepted the message) or
raises ChannelError."""

from __future__ import annotations


class ChannelError(Exception):
    """A message was not accepted. `permanent`: it never will be (the server refused this
    recipient); otherwise it is tried again later. The text never holds a secret."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
