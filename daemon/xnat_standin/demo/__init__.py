"""The demo and the sample sessions it (and the tests and benchmark) use."""
