"""The SDK's version, sent in the User-Agent (`custody-python/<version>`)."""

__version__ = "0.1.0"
