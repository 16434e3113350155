"""caixa: drop a file in an inbox, get the local AI result."""

__version__ = "0.1.0"
