"""Build of the compiled core. Metadata lives in pyproject.toml."""
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("dfflow._packer", ["dfflow/_packer.pyx"], extra_compile_args=["-O3"]),
         Extension("dfflow._framing", ["dfflow/_framing.pyx"], extra_compile_args=["-O3"]),
         Extension("dfflow._core", ["dfflow/_core.pyx"], extra_compile_args=["-O3"]),
         Extension("dfflow._secgroups", ["dfflow/_secgroups.pyx"], extra_compile_args=["-O3"]),
         # the compiled core's work for every chassis in one C loop (dfflow-bench compile's "core loop")
         Extension("benchmarks._core_fleet", ["benchmarks/_core_fleet.pyx"], extra_compile_args=["-O3"])],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)
