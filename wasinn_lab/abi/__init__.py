"""ABI front-ends: each turns one ABI's calls into the neutral API (``nn.GuestNN``, ``Session``)."""

__all__: list[str] = []
