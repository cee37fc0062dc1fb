"""sleepsound: sleep-sound recognition from earable microphones."""

__version__ = "0.1.0"
