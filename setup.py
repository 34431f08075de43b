"""Packaging for espnet_ros (ament_python): installs the library, console scripts and ROS share data."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "espnet_ros"
VERSION = "0.1.0"

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
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "torch", "opencv-python-headless", "setuptools"],
    zip_safe=False,
    maintainer="espnet_ros developers",
    maintainer_email="espnet-ros@users.noreply.github.com",
    description="ESPNet semantic segmentation for ROS 2: masks, overlays and drivable area from camera images.",
    license="MIT",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "espnet-ros = espnet_ros.cli:main",
        ],
    },
)
