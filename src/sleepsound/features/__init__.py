"""Log-mel features and the HDF5 spectrogram cache."""
