"""Packaging for espnet_ros (ament_python): installs the library, console scripts and ROS share data.

ROS tools find executables in ``<prefix>/lib/espnet_ros/``: the wrappers in ``scripts/`` are installed there as data
files (pip ignores setup.cfg's ``install_scripts``, colcon honours data files too), and each runs the console
script of the same name from ``<prefix>/bin``.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "espnet_ros"
VERSION = "0.1.0"
ROS_EXECUTABLES = ("segmentation_node", "image_player", "segmentation_recorder")

setup(
    name=PACKAGE,
    version=VERSION,
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
        (f"lib/{PACKAGE}", [f"scripts/{exe}" for exe in ROS_EXECUTABLES]),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "torch", "opencv-python-headless", "tqdm", "pyyaml", "rosbags", "setuptools"],
    zip_safe=False,
    maintainer="espnet_ros developers",
    maintainer_email="espnet-ros@users.noreply.github.com",
    description="ESPNet semantic segmentation for ROS 2: masks, overlays and drivable area from camera images.",
    license="MIT",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "espnet-ros = espnet_ros.cli:main",
            "segmentation_node = espnet_ros.segmentation_node:main",
            "image_player = espnet_ros.image_player:main",
            "segmentation_recorder = espnet_ros.recorder:main",
        ],
    },
)
