"""From a scan to a label map: the model frame, the slice engine, post-processing and the pipeline in order."""
