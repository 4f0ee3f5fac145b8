"""ABI front-ends: thin marshalling between guest memory and the host's neutral API."""
