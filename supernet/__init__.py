"""Weight-sharing supernets: one network whose weights every subnet of a family inherits.

``base`` says what a supernet provides (``Supernet``) and ``batchnorm`` re-estimates a subnet's
BatchNorm statistics; each family's supernet lives in a module of its own."""
