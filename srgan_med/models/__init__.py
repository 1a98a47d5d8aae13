"""Model bundles (generator + metadata in one safetensors file) and the weights shipped in the package."""
