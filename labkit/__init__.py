"""labkit: the helper package of the Efficient Deep Learning labs."""
__version__ = "0.1.0"
