"""espnet_ros: ESPNet semantic segmentation for ROS 2.

The package has two layers. :mod:`espnet_ros.core` is plain Python, numpy, OpenCV and torch (model, weights,
pre/post-processing, rendering, evaluation, geometry) and never imports ROS. The modules directly under
:mod:`espnet_ros` (node, message conversion, parameters, command line) are thin and build on the core.

Importing the package sets one OpenCV setting, unless it is already set: ``OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER=0``.
By default the workers of OpenCV's thread pool keep polling for new work (yielding the CPU between polls) after every
parallel operation. Here every OpenCV resize is followed at once by the network's OpenMP threads, and on a small CPU
the polling worker keeps preempting them (docs/performance.md, "Thread pools"). With the setting the workers sleep as
soon as a job is done. OpenCV reads it once, when it is first imported, so it takes effect where :mod:`espnet_ros`
is imported before ``cv2`` (every entry point of this package).
"""

import os

os.environ.setdefault("OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER", "0")

__version__ = "0.1.0"

__all__ = ["__version__"]
