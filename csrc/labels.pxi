# Label generation entry points (csrc/labels.hpp) are declared here.
