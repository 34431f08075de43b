"""espnet_ros: ESPNet semantic segmentation for ROS 2.

The package has two layers. :mod:`espnet_ros.core` is plain Python, numpy, OpenCV and torch (model, weights,
pre/post-processing, rendering, evaluation, geometry) and never imports ROS. The modules directly under
:mod:`espnet_ros` (node, message conversion, parameters, command line) are thin and build on the core.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
