"""The XNAT adapter (requests): `client` (the calls), `connection` (session, login, errors),
`answers` (what is data and what is a web page)."""
