"""The package version; the compiled extension embeds the same string."""

__version__ = "0.2.0"
