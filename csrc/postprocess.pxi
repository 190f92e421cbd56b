# Post-processing entry points (csrc/postprocess.hpp) are declared here.
