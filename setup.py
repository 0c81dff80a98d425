"""ELF-VC: a learned low-latency video codec (Rippel et al. 2021) and its toolchain."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
REQUIREMENTS = [
    line.strip()
    for line in (HERE / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="elfvc",
    version="0.1.0",
    description="ELF-VC learned video codec: model, training, export, runtime and benchmarks",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires="==3.11.*",
    packages=find_packages(include=["model", "model.*", "export", "export.*", "runtime", "runtime.*", "benchmarks", "benchmarks.*", "gpu_train"]),
    include_package_data=True,
    package_data={"runtime": ["checkpoints/*/*", "checkpoints/DEFAULT"]},
    install_requires=REQUIREMENTS,
    extras_require={
        # GPU deployment. TensorRT 10.x on purpose: it keeps the FP16 builder flag and
        # per-layer precision constraints that keep the hyperprior decoder in FP32; TensorRT 11
        # moves precision into the ONNX graph (strongly typed networks).
        "gpu": ["tensorrt-cu12==10.7.0", "pycuda==2024.1.2"],
        # The PyTorch training mirror (gpu_train/) runs in its own environment, without TF:
        # setup_env.sh makes .venv-torch for its tests.
        "gpu-train": ["torch>=2.1", "opencv-python-headless"],
    },
    entry_points={"console_scripts": ["elfvc=runtime.cli:run"]},
)
