"""lesionssl: Barlow Twins pretraining and honest limited-label transfer for lesion images."""

from lesionssl.errors import LesionSSLError

__version__ = "0.1.0"
__all__ = ["LesionSSLError", "__version__"]
