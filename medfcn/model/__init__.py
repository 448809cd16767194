"""The networks, their model card and the safetensors model files (the bundled weights under weights/)."""
