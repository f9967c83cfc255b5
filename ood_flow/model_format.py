"""What makes a file an oodflow model file (its format name and version, the suffixes of its two encodings),
readable without torch, so ``oodflow info`` can tell a model file from a score file before importing it."""

FORMAT = "oodflow-model"
FORMAT_VERSION = 2  # 2: the authors' RealNVP st-network and layout, weight-normalised log-scale (see flows.migrate)
PT_SUFFIXES = (".pt", ".pth")
H5_SUFFIXES = (".h5", ".hdf5")
