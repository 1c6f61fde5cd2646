"""dynjax: dynamic channel pruning and conditional computation for JAX/Flax."""

import setuptools

INSTALL_REQUIRES = [
    "jax>=0.4.35",
    "flax>=0.10",
    "optax>=0.2.3",
    "orbax-checkpoint>=0.6",
    "ml-collections>=0.1.1",
    "clu>=0.0.10",
    "absl-py",
    "numpy",
    "scikit-learn",
    "matplotlib",
    "tensorboard",
]

# TensorFlow only for the tensorflow-datasets sources (cifar10, imagenet2012);
# in-memory datasets (digits, npz) run on NumPy alone.
TFDS_REQUIRE = [
    "tensorflow-cpu>=2.15; platform_machine=='x86_64'",
    "tensorflow>=2.15; platform_machine!='x86_64'",
    "tensorflow-datasets>=4.9",
]

EXTRAS_REQUIRE = {
    "tfds": TFDS_REQUIRE,
    # The tests cover the tfds path too.
    "test": ["pytest>=7", "chex>=0.1.86", "hypothesis>=6"] + TFDS_REQUIRE,
    # Only the torchvision weight converter imports torch.
    "torch": ["torch>=2.0"],
}

setuptools.setup(
    name="dynjax",
    version="0.1.0",
    description=("Dynamic (input-dependent) channel pruning and conditional "
                 "computation for CNNs in JAX/Flax: FTWT, FBS, CondConv."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["dynjax", "dynjax.*"]),
    # The sparse executor's calibrated cost model.
    package_data={"dynjax.sparse": ["cost_model.json"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    license="Apache-2.0",
)
