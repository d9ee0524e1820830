"""Device probe: does a TORCH_CHECK whose message formats an integer crash in an extension built on this machine
(bench/NOTES.md, ninth session)? A tiny inline extension, each case in its own process, with the process's
libstdc++ as loaded and with the build compiler's libstdc++ preloaded."""
import os
import subprocess
import sys

SRC = r"""
#include <torch/extension.h>
#include <sstream>
std::string format_int() { std::ostringstream os; os << "n=" << 42; return os.str(); }
void check_literal() { TORCH_CHECK(false, "a literal message"); }
void check_text() { TORCH_CHECK(false, "text ", "and more text"); }
void check_int() { TORCH_CHECK(false, "an int ", 42); }
void check_to_string() { TORCH_CHECK(false, "to_string " + std::to_string(42)); }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("format_int", &format_int); m.def("check_literal", &check_literal); m.def("check_text", &check_text);
  m.def("check_int", &check_int); m.def("check_to_string", &check_to_string);
}
"""
if len(sys.argv) > 1:
    from torch.utils.cpp_extension import load_inline
    mod = load_inline("abi_probe", cpp_sources=SRC, build_directory=os.environ["PROBE_DIR"])
    try:
        print(sys.argv[1], "returned", getattr(mod, sys.argv[1])())
    except RuntimeError as exc:
        print(sys.argv[1], "raised", str(exc).splitlines()[0][:80])
    maps = [line.split()[-1] for line in open("/proc/self/maps") if "libstdc++" in line]
    print("  libstdc++ mapped:", sorted(set(maps)))
    sys.exit(0)
os.makedirs(os.environ.setdefault("PROBE_DIR", "/tmp/abi_probe"), exist_ok=True)
subprocess.run([sys.executable, __file__, "format_int"], check=False)  # builds it
gcc_lib = subprocess.run(["/opt/gcc/bin/g++", "-print-file-name=libstdc++.so.6"], capture_output=True, text=True).stdout.strip()
print("g++:", subprocess.run(["/opt/gcc/bin/g++", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
      "| its libstdc++:", gcc_lib)
for preload in ["", gcc_lib]:
    print("== LD_PRELOAD=" + preload)
    for case in ["format_int", "check_literal", "check_text", "check_int", "check_to_string"]:
        rc = subprocess.run([sys.executable, __file__, case], env=dict(os.environ, LD_PRELOAD=preload)).returncode
        print("  ", case, "exit", rc)
