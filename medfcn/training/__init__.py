"""Learning from labelled scans: the training loop, its data, options, augmentation, synthesis and calibration."""
