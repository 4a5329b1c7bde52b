"""Build fastral's compiled modules with CMake (CMakeLists.txt is the authoritative build description).

Environment switches:
  FASTRAL_SKIP_EXT=1      build nothing: fastral then runs on its pure-PyTorch references (and Triton, if installed).
  FASTRAL_STRICT_BUILD=1  a failed compile is an error (CI sets this). By default a failed build only warns, so that
                          `pip install` still gives a working package whose `backend="cpp"` explains what is missing.
  FASTRAL_CUDA=0          never build the CUDA module, even where nvcc is found.
  FASTRAL_CUDA_ARCHS      CUDA architectures, default "80;90".
  FASTRAL_BUILD_JOBS      parallel compile jobs (default: the number of CPUs).
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in {"1", "true", "yes", "on"}


class CMakeExtension(Extension):
    """One CMake target that produces a Python extension module of the same name."""

    def __init__(self, name: str, optional: bool):
        super().__init__(name, sources=[])
        self.optional_module = optional


class CMakeBuild(build_ext):
    def run(self):
        if _flag("FASTRAL_SKIP_EXT"):
            print("fastral: FASTRAL_SKIP_EXT is set, skipping the compiled modules")
            return
        try:
            self._configure_and_build()
        except (OSError, subprocess.CalledProcessError) as exc:
            if _flag("FASTRAL_STRICT_BUILD"):
                raise
            print(
                f"fastral: WARNING: the compiled modules failed to build ({exc}); fastral will run on its "
                "PyTorch references. Set FASTRAL_STRICT_BUILD=1 to make this an error.",
                file=sys.stderr,
            )

    def _configure_and_build(self):
        import pybind11

        build_temp = Path(self.build_temp).resolve() / "cmake"
        build_temp.mkdir(parents=True, exist_ok=True)
        cmake = shutil.which("cmake")
        if cmake is None:
            raise OSError("cmake was not found on PATH")
        config = "Debug" if _flag("DEBUG") else "Release"
        args = [
            cmake,
            "-S",
            str(ROOT),
            "-B",
            str(build_temp),
            f"-DCMAKE_BUILD_TYPE={config}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DFASTRAL_CUDA={'OFF' if os.environ.get('FASTRAL_CUDA', '1') == '0' else 'ON'}",
            f"-DFASTRAL_CUDA_ARCHS={os.environ.get('FASTRAL_CUDA_ARCHS', '80;90')}",
        ]
        if shutil.which("ninja"):
            args += ["-G", "Ninja"]
        subprocess.run(args, check=True)
        jobs = os.environ.get("FASTRAL_BUILD_JOBS", str(os.cpu_count() or 1))
        subprocess.run([cmake, "--build", str(build_temp), "--config", config, "-j", jobs], check=True)

        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        for ext in self.extensions:
            short = ext.name.rsplit(".", 1)[-1]
            built = next(iter(build_temp.rglob(f"{short}{suffix}")), None)
            if built is None:
                if ext.optional_module:
                    continue  # e.g. no CUDA toolkit on this machine
                raise OSError(f"CMake did not produce {short}{suffix}")
            dest = Path(self.get_ext_fullpath(ext.name))
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(built, dest)
            print(f"fastral: built {ext.name} -> {dest}")


setup(
    # kernels/ holds the Triton kernels; it is installed as fastral.kernels, never as a bare `kernels`.
    packages=[*find_packages(include=["fastral", "fastral.*"]), "fastral.kernels"],
    package_dir={"fastral.kernels": "kernels"},
    # fastral._C is required wherever its sources are present; the CUDA module wherever nvcc is found.
    ext_modules=[
        CMakeExtension("fastral._C", optional=not (ROOT / "csrc" / "cpu" / "bindings.cpp").exists()),
        CMakeExtension("fastral._C_cuda", optional=True),
    ],
    cmdclass={"build_ext": CMakeBuild},
)
