"""The networks, their model card and the safetensors model files (the bundled weights are in medfcn/models/)."""
