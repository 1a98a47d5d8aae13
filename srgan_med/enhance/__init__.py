"""Volume-wise super-resolution with a 2-D generator: tiling, batching, devices, geometry."""
