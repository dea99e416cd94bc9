# Declares the C extension; everything else lives in pyproject.toml.
import glob
import os

from setuptools import Extension, setup

# The layout is the list: every .c of csrc/core/ (pure C, also built into the C driver) and of
# csrc/binding/ (the CPython module over it).
CORE_SOURCES = sorted(glob.glob("csrc/core/*.c"))
BINDING_SOURCES = sorted(glob.glob("csrc/binding/*.c"))

extra_compile_args = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
extra_link_args = ["-pthread"]
if os.environ.get("SAFEPOOL_SANITIZE"):
    # Used by `make test-asan`: build with AddressSanitizer/UBSan.
    flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    extra_compile_args += flags
    extra_link_args += flags

define_macros = [("_GNU_SOURCE", "1")]
options = {}
ABI3 = bool(os.environ.get("SAFEPOOL_ABI3"))
if ABI3:
    # One cp310-abi3 extension for every CPython >= 3.10 (csrc/binding/abi_compat.h)
    define_macros.append(("Py_LIMITED_API", "0x030A0000"))
    options["bdist_wheel"] = {"py_limited_api": "cp310"}

setup(
    options=options,
    ext_modules=[
        Extension(
            "redis_safepool._core",
            sources=BINDING_SOURCES + CORE_SOURCES,
            include_dirs=["csrc/core", "csrc/binding"],
            define_macros=define_macros,
            py_limited_api=ABI3,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ],
)
