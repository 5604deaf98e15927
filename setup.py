"""Python packaging of panoptic_ros for a source checkout (pip install -e .).

In a ROS 2 workspace the package is built by colcon through CMakeLists.txt
(ament_cmake), which installs these same modules beside the generated messages.
Run-time dependencies are pinned in requirements/ and installed by
tools/setup_env.sh; install_requires names them loosely for other installers.
"""
from setuptools import find_packages, setup

setup(
    name="panoptic_ros",
    version="0.1.0",
    description="EfficientPS-style panoptic segmentation and occlusion-aware tracking for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.11",
    # The package sits at the repository root; "" -> "." makes the editable
    # install a plain path entry (see tools/setup_env.sh for why that matters).
    package_dir={"": "."},
    packages=find_packages(where=".", include=["panoptic_ros", "panoptic_ros.*"]),
    include_package_data=False,
    install_requires=[
        "numpy>=1.26",
        "opencv-python-headless>=4.8",
        "pyyaml",
        "safetensors",
        "rosbags>=0.10",
        "tqdm",
        "matplotlib",
        "scipy",
        "torch>=2.4",
        "torchvision>=0.19",
    ],
    entry_points={
        "console_scripts": [
            "panoptic-ros = panoptic_ros.cli:main",
            "panoptic_node = panoptic_ros.ros.node:main",
        ],
    },
)
