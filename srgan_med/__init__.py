"""srgan-med: super-resolution of medical scans with SRResNet / SRGAN.

Heavy libraries (torch, MONAI, pydicom) are imported by the modules that need them, never here,
so that ``srgan-med --help`` stays instant.
"""

__version__ = "0.1.0"
